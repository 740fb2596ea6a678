"""Findings in test code are low confidence: a test chooses its own
(synthetic, often float64) inputs. Test code is a `test`/`tests`/`testing`
folder below the project root, or a `test_*.py`/`*_test.py`/`conftest.py` file."""

from __future__ import annotations

import json
import subprocess
import sys

import libcst as cst
import pytest

from helpers import lint
from nanlint.analysis.scopes import Scopes

SCORE = "import torch\n\ndef attend(q, k):\n    s = q.half() @ k.mT\n    return torch.exp(s)\n"


def _check(cwd, *args):
    proc = subprocess.run([sys.executable, "-m", "nanlint", "check", "--no-cache", "--output-format", "json",
                           "--min-confidence", "low", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    return {f["path"].replace("\\", "/"): f for f in json.loads(proc.stdout)}


def test_test_folders_and_files_make_findings_low(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.nanlint]\n")
    for rel in ("src/model.py", "tests/helpers.py", "pkg/testing/refs.py", "test_model.py", "pkg/ops_test.py",
                "conftest.py", "pkg/contest.py", "pkg/latest/model.py", "pkg/testsuite.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(SCORE)
    found = _check(tmp_path, ".")
    tests = {"tests/helpers.py", "pkg/testing/refs.py", "test_model.py", "pkg/ops_test.py", "conftest.py"}
    assert set(found) == tests | {"src/model.py", "pkg/contest.py", "pkg/latest/model.py", "pkg/testsuite.py"}
    for path, f in found.items():
        assert f["confidence"] == ("low" if path in tests else "high"), path
        assert f["message"].endswith("(in test code, which chooses its own inputs)") == (path in tests)
    # shown by default only outside tests
    proc = subprocess.run([sys.executable, "-m", "nanlint", "check", "--no-cache", "."], cwd=tmp_path,
                          capture_output=True, text=True)
    assert "src/model.py:5:12: NL002" in proc.stdout and "tests/helpers.py" not in proc.stdout


def test_a_project_that_lives_in_a_tests_folder_is_not_test_code(tmp_path):
    project = tmp_path / "tests" / "proj"
    project.mkdir(parents=True)
    (project / "pyproject.toml").write_text("[tool.nanlint]\n")
    (project / "model.py").write_text(SCORE)
    found = _check(project, str(project / "model.py"))
    assert [f["confidence"] for f in found.values()] == ["high"]


def test_a_snippet_is_judged_by_the_name_it_is_given():
    assert [f.confidence for f in lint(SCORE, ["NL002"], path="tests/t.py")] == ["low"]
    assert [f.confidence for f in lint(SCORE, ["NL002"], path="/abs/tests/model.py")] == ["high"]
    assert [f.confidence for f in lint(SCORE, ["NL002"], path="model.py")] == ["high"]


@pytest.mark.parametrize("second, exclusive", [("else", True), ("elif", True), ("after", False)])
def test_bindings_in_other_branches_of_one_if_are_exclusive(second, exclusive):
    tail = {"else": "    else:\n        x = 2\n", "elif": "    elif c > 1:\n        x = 2\n",
            "after": "    x = 2\n"}[second]
    module = cst.parse_module(f"def f(c):\n    if c:\n        x = 1\n{tail}    return x\n")
    scopes = Scopes(module)
    func = module.body[0]
    first, other = scopes.bindings[func]["x"]
    assert scopes.exclusive(first.node, other.node) is exclusive
    # the read in `return x` sees the first binding unless the second always replaces it
    assert bool(scopes.reads_of(first)) is exclusive


def test_names_in_tuple_targets_are_bindings_not_reads():
    module = cst.parse_module("def f(x):\n    a, (b, *c) = x\n    for i, j in x:\n        pass\n    return a\n")
    scopes = Scopes(module)
    func = module.body[0]
    reads = scopes.reads.get(func, {})
    assert set(reads) == {"x", "a"}
    assert len(reads["a"]) == 1  # only `return a`


DEAD = (
    "import torch\n"
    "def normalize(x):\n"
    "    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-8)\n"
    "def _unit(x):\n"
    "    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-8)\n"
)


def test_a_function_nothing_calls_is_dead_code_at_low_confidence():
    def found(source):
        return [(f.line, f.confidence) for f in lint(source, ["NL001"]) if f.confidence != "low" or "nothing calls" in f.message]

    # a module: its functions may be imported elsewhere (a private one that its
    # own file never calls most likely is: torch imports `_helpers` across modules)
    assert found(DEAD) == [(3, "medium"), (5, "medium")]
    # a program: none of its functions is imported elsewhere as a rule
    program = DEAD + "if __name__ == '__main__':\n    print(1)\n"
    assert found(program) == [(3, "low"), (5, "low")]
    # called, referenced by name, decorated, or exposed by fire.Fire(): not dead
    assert found(program + "    print(normalize(torch.ones(3)))\n") == [(3, "medium"), (5, "low")]
    assert found(program + "    fns = [normalize, _unit]\n") == [(3, "medium"), (5, "medium")]
    assert found(program.replace("def normalize", "@torch.jit.script\ndef normalize")) == [(4, "medium"), (6, "low")]
    assert found(program + "    import fire\n    fire.Fire()\n") == [(3, "medium"), (5, "medium")]
