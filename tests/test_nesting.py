"""Input that would crash or stall libcst's native parser (issue 12): deep
bracket nesting, long chains of operators and method calls. Such a file is
refused before the parser sees it, as one `too deeply nested` error line; a
shallower one is checked; every other file of the run is still checked, with
one worker or several."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanlint.engine import MAX_BRACKET_DEPTH, MAX_TREE_DEPTH, bracket_depth

HAZARD = "import torch\n\ndef f(logvar):\n    return torch.exp(logvar)\n"

# kind -> (source of nesting n, nesting level at which it must be refused)
KINDS = {
    # (indexing `x`: a literal list or dict alone is a Python value, never float16)
    "brackets": (lambda n: "y = torch.exp(x[" + "[" * n + "a" + "]" * n + "])", MAX_BRACKET_DEPTH),
    "parens": (lambda n: "y = torch.exp(" + "(" * n + "a" + ")" * n + ")", MAX_BRACKET_DEPTH),
    "calls": (lambda n: "y = " + "torch.exp(" * n + "a" + ")" * n, MAX_BRACKET_DEPTH),
    "dicts": (lambda n: "y = torch.exp(x[" + "{1: " * n + "a" + "}" * n + "])", MAX_BRACKET_DEPTH),
    # two tree levels per link (call, attribute), three per `-(`
    "chain": (lambda n: "y = torch.exp(x)" + ".a()" * n, MAX_TREE_DEPTH // 2),
    "plus": (lambda n: "y = torch.exp(x) + " + " + ".join(["a"] * n), MAX_TREE_DEPTH),
    "unary": (lambda n: "y = torch.exp(" + "-" * n + "a)", MAX_TREE_DEPTH),
    "not": (lambda n: "y = torch.exp(x) if " + "not " * n + "a else 0", MAX_TREE_DEPTH),
    # the first statement's syntax error stops Python's parser before the deep part
    "broken": (lambda n: "y = = 1\nz = torch.exp(" + "[" * n + "a" + "]" * n + ")", MAX_BRACKET_DEPTH),
    "string": (lambda n: "y = torch.exp(x)\nz = '" + "[" * n + "'", None),
}
LEVELS = (1_500, 4_000, 20_000)


def run(*args, cwd):
    # the snippets' hazards (`torch.exp` of a function's parameter) are low-confidence
    # findings: these tests are about reading, writing and reporting, so they show every confidence
    if args and args[0] in ("check", "fix"):
        args = (args[0], "--min-confidence", "low", *args[1:])
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_generated_nesting_is_checked_or_refused_never_a_crash(tmp_path, jobs):
    expect = {}
    for kind, (make, limit) in KINDS.items():
        levels = LEVELS if limit is None else (limit // 2, limit - 10, limit + 10) + LEVELS
        for n in levels:
            name = f"{kind}_{n}.py"
            (tmp_path / name).write_text("import torch\n" + make(n) + "\n")
            expect[name] = limit is not None and n > limit
    for i in range(3):
        (tmp_path / f"ok{i}.py").write_text(HAZARD)
    proc = run("check", "--no-cache", f"--jobs={jobs}", ".", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # not 139 (SIGSEGV)
    assert "Traceback" not in proc.stderr
    for i in range(3):
        assert f"ok{i}.py:4:12: NL002" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    refused = {line.split(":")[1].strip() for line in errors}
    assert all("too deeply nested to check" in line for line in errors), errors
    assert refused == {name for name, deep in expect.items() if deep}
    for name, deep in expect.items():
        if not deep:
            assert f"{name}:" in proc.stdout, name  # checked: NL002 (or NL000 for `broken`)

    # fix leaves a refused file byte-identical and fixes the others
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.py")}
    proc = run("fix", "--unsafe-fixes", "--no-cache", f"--jobs={jobs}", ".", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    for name, deep in expect.items():
        if deep:
            assert (tmp_path / name).read_bytes() == before[name], name
    assert (tmp_path / "ok0.py").read_bytes() != before["ok0.py"]


# bracket nesting written among strings and comments that hold brackets of their own
_noise = st.sampled_from(["'(['", '"]})"', "'''(\n['''", "# ((( ]]\n", "b'\\'('", "x", ", "])


@st.composite
def _nested(draw, depth=0):
    if depth >= 30 or draw(st.booleans()):
        return draw(_noise), 0
    opener, closer = draw(st.sampled_from(["()", "[]", "{}"]))
    parts, deepest = [], 0
    for _ in range(draw(st.integers(1, 3))):
        text, inner = draw(_nested(depth + 1))
        parts.append(text)
        deepest = max(deepest, inner)
    return opener + " ".join(parts) + "\n" + closer, deepest + 1


@settings(max_examples=200, deadline=None)
@given(_nested(), st.integers(0, 250))
def test_bracket_depth_counts_code_not_strings_or_comments(case, extra):
    text, depth = case
    source = "(" * extra + text + ")" * extra
    expected = depth + extra
    # below the limit the scan may stop early and report 0
    assert bracket_depth(source) == expected or (bracket_depth(source) == 0 and expected <= MAX_BRACKET_DEPTH)
