"""nanlint inside the tools users already have: CI output formats (GitHub
annotations, SARIF validated against the official 2.1.0 schema, JUnit),
notebooks, .gitignore, --show-settings/--show-files, confirm's progress."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nanlint.gitignore import parse

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
NOTEBOOK = ROOT / "fixtures" / "notebooks" / "vae.ipynb"

HAZARD = "import torch\ndef attend(q, k):\n    s = q.half() @ k.mT\n    return torch.exp(s)\n"
FIXABLE = "import torch\nh = x * (1 + torch.tanh(s))\n"
CLEAN = "import torch\n\ndef f(x):\n    return torch.exp(x - x.amax(-1, keepdim=True))\n"


def run(*args, cwd=None, stdin=None, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=full_env)


@pytest.fixture
def project(tmp_path):
    # the gate (NL006) is a medium-confidence finding: this project shows medium and up
    (tmp_path / "pyproject.toml").write_text('[tool.nanlint]\nmin-confidence = "medium"\n')
    (tmp_path / "bad.py").write_text(HAZARD)
    (tmp_path / "gate.py").write_text(FIXABLE)
    (tmp_path / "good.py").write_text(CLEAN)
    return tmp_path


# -- GitHub annotations ---------------------------------------------------------------


def test_github_annotations(project):
    (project / "odd, name%.py").write_text(HAZARD)
    proc = run("check", "--output-format", "github", ".", cwd=project)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("::error title=nanlint NL002 (unclamped-exp),file=bad.py,line=4,col=12,"
                               "endLine=4,endColumn=")
    assert "::NL002 `exp` of an argument" in lines[0]
    gate = next(line for line in lines if "file=gate.py" in line)
    assert gate.startswith("::warning ") and "medium confidence" in gate
    # property values escape `,` `:` `%` so the runner does not split them
    assert "file=odd%2C name%25.py," in lines[2]


def test_github_clean_prints_nothing(project):
    proc = run("check", "--output-format", "github", "good.py", cwd=project)
    assert (proc.returncode, proc.stdout) == (0, "")


# -- SARIF ------------------------------------------------------------------------------


def _validate_sarif(log: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DATA / "sarif-2.1.0-rtm.5.json").read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(log), key=str)
    assert not errors, [e.message for e in errors[:5]]


def test_sarif_validates_and_carries_rules_locations_and_fixes(project):
    proc = run("check", "--output-format", "sarif", ".", cwd=project)
    assert proc.returncode == 1, proc.stderr
    log = json.loads(proc.stdout)
    _validate_sarif(log)
    run_ = log["runs"][0]
    rules = run_["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert ids[0] == "NL000" and "NL002" in ids and "NL006" in ids
    nl002 = rules[ids.index("NL002")]
    assert "## Why is this bad?" in nl002["help"]["markdown"] and "11.09" in nl002["help"]["text"]
    results = run_["results"]
    assert {r["ruleId"] for r in results} == {"NL002", "NL006"}
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
    gate = next(r for r in results if r["ruleId"] == "NL006")
    assert gate["properties"]["confidence"] == "medium"
    loc = gate["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "gate.py", "uriBaseId": "%SRCROOT%"}
    assert (loc["region"]["startLine"], loc["region"]["startColumn"]) == (2, 10)
    replacement = gate["fixes"][0]["artifactChanges"][0]["replacements"][0]
    assert replacement["insertedContent"]["text"] == "torch.sigmoid(s) + 0.5"
    # applying the SARIF replacement gives exactly what `nanlint fix` writes
    region = replacement["deletedRegion"]
    line = FIXABLE.splitlines()[region["startLine"] - 1]
    new_line = line[: region["startColumn"] - 1] + replacement["insertedContent"]["text"] + line[region["endColumn"] - 1:]
    fixed = run("fix", "--unsafe-fixes", "-", "--stdin-filename", "gate.py", stdin=FIXABLE, cwd=project)
    assert fixed.stdout.splitlines()[1] == new_line


def test_sarif_of_a_clean_run_and_of_a_notebook_validate(project):
    clean = json.loads(run("check", "--output-format", "sarif", "good.py", cwd=project).stdout)
    _validate_sarif(clean)
    assert clean["runs"][0]["results"] == []
    nb = json.loads(run("check", "--output-format", "sarif", "--min-confidence", "medium", str(NOTEBOOK),
                             cwd=project).stdout)
    _validate_sarif(nb)
    results = nb["runs"][0]["results"]
    assert [(r["properties"]["cell"], r["properties"]["line"]) for r in results] == [(3, 2), (3, 6), (5, 3)]
    assert all("region" not in r["locations"][0]["physicalLocation"] and "fixes" not in r for r in results)
    assert results[0]["message"]["text"].startswith("cell 3:2:11: ")


# -- JUnit ------------------------------------------------------------------------------


def test_junit(project):
    proc = run("check", "--output-format", "junit", ".", cwd=project)
    assert proc.returncode == 1
    root = ET.fromstring(proc.stdout)
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "2", "2")
    suites = {s.get("name"): s for s in root}
    assert set(suites) == {"bad.py", "gate.py"}
    case = suites["bad.py"].find("testcase")
    assert case.get("name") == "NL002 unclamped-exp at 4:12"
    assert case.find("failure").get("type") == "NL002"
    clean = ET.fromstring(run("check", "--output-format", "junit", "good.py", cwd=project).stdout)
    assert (clean.get("tests"), clean.get("failures")) == ("1", "0")


# -- notebooks ------------------------------------------------------------------------------


def test_notebook_findings_point_to_cells_and_skip_ipython_syntax(tmp_path):
    proc = run("check", "--min-confidence", "medium", str(NOTEBOOK), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    found = [line.split(" [")[0] for line in proc.stdout.splitlines()[:-1]]
    assert found == [f"{NOTEBOOK}:cell 3:2:11: NL002", f"{NOTEBOOK}:cell 3:6:17: NL006",
                     f"{NOTEBOOK}:cell 5:3:41: NL003"]
    # markdown, `%%bash`, `!pip`, `%matplotlib` and `torch.exp?` are not read as Python
    assert "NL000" not in proc.stdout


def test_notebook_fix_rewrites_only_the_changed_cells(tmp_path):
    path = tmp_path / "nb.ipynb"
    shutil.copy(NOTEBOOK, path)
    before = path.read_bytes()
    proc = run("fix", "--unsafe-fixes", "--min-confidence", "medium", "nb.ipynb", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the NL002 exp has no fix and remains
    assert "Fixed 2 findings in 1 file (1 NL003, 1 NL006)." in proc.stdout
    after = path.read_bytes()
    old, new = json.loads(before), json.loads(after)
    assert new["cells"][2]["source"][5] == "    return x * (torch.sigmoid(s) + 0.5)  # café\n"
    assert new["cells"][4]["source"][2] == "scores = scores.masked_fill(scores > 0, torch.finfo(scores.dtype).min)"
    # everything else (outputs, images, metadata, ids, magics) is unchanged...
    for i in (2, 4):
        new["cells"][i]["source"] = old["cells"][i]["source"]
    assert new == old
    # ...and byte-identical: the only differing lines are the two fixed source lines
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    assert [b.strip() for _, b in diff] == [
        b'"    return x * (torch.sigmoid(s) + 0.5)  # caf\xc3\xa9\\n",',
        b'"scores = scores.masked_fill(scores > 0, torch.finfo(scores.dtype).min)"',
    ]
    again = run("fix", "--unsafe-fixes", "--min-confidence", "medium", "nb.ipynb", cwd=tmp_path)
    assert path.read_bytes() == after and "Fixed 0 findings" in again.stdout


def test_notebook_fix_keeps_ipython_lines_and_string_sources(tmp_path):
    cell_text = "import torch\nif True:\n    %time y = 1\n    h = x * (1 + torch.tanh(s))\n!ls\n"
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                     "source": cell_text}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    raw = json.dumps(nb, indent=2)  # another writer: 2 spaces, a string source
    path = tmp_path / "s.ipynb"
    path.write_text(raw)
    proc = run("fix", "--unsafe-fixes", "--min-confidence", "medium", "s.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = cell_text.replace("(1 + torch.tanh(s))", "(torch.sigmoid(s) + 0.5)")
    assert path.read_text() == raw.replace(json.dumps(cell_text), json.dumps(expected))


def test_notebook_with_a_broken_cell_checks_the_others(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": ["def broken(:\n"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": [HAZARD]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "b.ipynb").write_text(json.dumps(nb, indent=1))
    proc = run("check", "b.ipynb", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.startswith("b.ipynb:cell 1:1:12: NL000 [syntax-error]")
    assert "b.ipynb:cell 2:4:12: NL002" in proc.stdout


def test_notebook_cells_ipython_runs_are_no_syntax_errors(tmp_path):
    """IPython's automagic runs `pip install x` and `ls data` without the `%`, and it
    dedents a cell whose first line is indented (a block pasted out of a function):
    neither is NL000, and the indented cell is still checked and fixed in place."""
    indented = "    y = x * (1 + torch.tanh(s))\n    if y.sum() > 0:\n        print(y)\n"
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "pip install -q torch\nls data/robots/urdf\nimport torch\nls = [1]\nls - 1\n"
                   "system = 'a'\nsystem += (\n    'b'\n)\n"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": indented},
        # look-alikes that are broken in IPython too: a placeholder left in, and an indented
        # cell whose later line is indented less than its first
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": "key = <your-key>\n"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "    a = 1\n  b = 2\n"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    proc = run("check", "--min-confidence", "medium", "--output-format", "json", "n.ipynb", cwd=tmp_path)
    found = sorted((f["cell"], f["line"], f["code"]) for f in json.loads(proc.stdout))
    assert found == [(2, 1, "NL006"), (3, 1, "NL000"), (4, 2, "NL000")], proc.stdout
    run("fix", "--unsafe-fixes", "--min-confidence", "medium", "n.ipynb", cwd=tmp_path)
    cells = json.loads(path.read_text())["cells"]
    assert cells[1]["source"] == indented.replace("(1 + torch.tanh(s))", "(torch.sigmoid(s) + 0.5)")
    assert cells[0]["source"] == nb["cells"][0]["source"]


def test_invalid_notebook_is_one_error_line(tmp_path):
    (tmp_path / "bad.ipynb").write_text("{not json")
    (tmp_path / "ok.py").write_text(HAZARD)
    proc = run("check", ".", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: bad.ipynb: not a valid notebook: invalid JSON")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "ok.py:4:12: NL002" in proc.stdout
    before = (tmp_path / "bad.ipynb").read_bytes()
    run("fix", ".", cwd=tmp_path)
    assert (tmp_path / "bad.ipynb").read_bytes() == before


def test_notebook_from_stdin_and_json_cell_field(tmp_path):
    proc = run("check", "--output-format", "json", "--min-confidence", "medium", "-", "--stdin-filename", "nb.ipynb",
               stdin=NOTEBOOK.read_text(encoding="utf-8"), cwd=tmp_path)
    items = json.loads(proc.stdout)
    assert [(i["cell"], i["line"], i["code"]) for i in items] == [(3, 2, "NL002"), (3, 6, "NL006"), (5, 3, "NL003")]
    py = json.loads(run("check", "--output-format", "json", "-", "--stdin-filename", "m.py",
                        stdin=HAZARD, cwd=tmp_path).stdout)
    assert py[0]["cell"] is None


def test_directories_include_notebooks_but_not_checkpoints(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / "a.ipynb")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb")
    proc = run("check", "--show-files", ".", cwd=tmp_path)
    assert proc.stdout.split() == ["a.ipynb"]


# -- .gitignore, --show-files, --force-exclude ----------------------------------------------


@pytest.mark.parametrize("rel,is_dir,ignored", [
    ("build", True, True), ("pkg/build", True, True), ("build", False, False),
    ("x.pyc", False, True), ("pkg/keep.pyc", False, False),
    ("top.py", False, True), ("pkg/top.py", False, False),
    ("docs/gen_a.py", False, True), ("docs/x/y/gen_a.py", False, True), ("docs/x/own.py", False, False),
    ("#hash", False, True), ("a/b", False, True), ("z/a/b", False, False), ("sp ace ", False, True),
])
def test_gitignore_patterns(rel, is_dir, ignored):
    rules = parse("# comment\nbuild/\n*.pyc\n!keep.pyc\n/top.py\ndocs/**/gen_*.py\n\\#hash\na/b\nsp ace\\ \n")
    verdict = False
    for regex, negated, dir_only in rules:
        if (not dir_only or is_dir) and regex.match(rel):
            verdict = not negated
    assert verdict is ignored


def _git_repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("generated/\n*_scratch.py\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / ".gitignore").write_text("local.py\n")
    for rel in ("src/model.py", "src/local.py", "src/a_scratch.py", "generated/out.py"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(HAZARD)
    return tmp_path


def test_respect_gitignore(tmp_path):
    repo = _git_repo(tmp_path)
    assert run("check", "--show-files", cwd=repo).stdout.split() == ["src/model.py"]
    # from a subdirectory, the root .gitignore still applies
    assert run("check", "--show-files", ".", cwd=repo / "src").stdout.split() == ["model.py"]
    everything = run("check", "--show-files", "--no-respect-gitignore", cwd=repo).stdout.split()
    assert everything == ["generated/out.py", "src/a_scratch.py", "src/local.py", "src/model.py"]
    (repo / "pyproject.toml").write_text("[tool.nanlint]\nrespect-gitignore = false\n")
    assert len(run("check", "--show-files", cwd=repo).stdout.split()) == 4


def test_gitignore_applies_only_inside_a_work_tree(tmp_path):
    (tmp_path / ".gitignore").write_text("*.py\n")
    (tmp_path / "m.py").write_text(HAZARD)
    assert run("check", "--show-files", cwd=tmp_path).stdout.split() == ["m.py"]


def test_named_files_are_checked_unless_force_exclude(tmp_path):
    repo = _git_repo(tmp_path)
    (repo / "pyproject.toml").write_text('[tool.nanlint]\nextend-exclude = ["src/vendored.py"]\n')
    (repo / "src" / "vendored.py").write_text(HAZARD)
    named = ["src/vendored.py", "src/local.py", "src/model.py"]
    assert run("check", "--show-files", *named, cwd=repo).stdout.split() == sorted(named)
    assert run("check", "--show-files", "--force-exclude", *named, cwd=repo).stdout.split() == ["src/model.py"]
    proc = run("check", "--force-exclude", "src/vendored.py", cwd=repo)
    assert proc.returncode == 0 and "All checks passed!" in proc.stdout


# -- --show-settings ---------------------------------------------------------------------------


def test_show_settings_names_the_file_and_the_origin_of_each_value(tmp_path):
    import tomllib

    (tmp_path / "pyproject.toml").write_text(
        '[tool.nanlint]\nextend-select = ["NL005"]\ntarget-dtypes = ["bfloat16"]\n'
        '[tool.nanlint.per-file-ignores]\n"tests/*" = ["NL004"]\n')
    proc = run("check", "--show-settings", "--ignore", "NL006", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"# settings from: {(tmp_path / 'pyproject.toml')}"
    lines = {line.split(" = ")[0]: line for line in proc.stdout.splitlines() if " = " in line}
    assert lines["extend-select"].endswith('["NL005"]  # config')
    assert lines["ignore"].endswith('["NL006"]  # command line')
    assert lines["respect-gitignore"].endswith("true  # default")
    settings = tomllib.loads(proc.stdout)  # the output is TOML
    assert settings["target-dtypes"] == ["bfloat16"]
    assert settings["per-file-ignores"] == {"tests/*": ["NL004"]}
    assert "NL005" in settings["rules"] and "NL006" not in settings["rules"]
    bare = run("check", "--show-settings", cwd=tmp_path / ".." )
    assert "no configuration file found" in bare.stdout.splitlines()[0] or "settings from" in bare.stdout


# -- confirm's progress ----------------------------------------------------------------------


def test_confirm_progress_only_on_a_terminal(tmp_path):
    pytest.importorskip("torch")
    import pty

    args = [sys.executable, "-m", "nanlint", "confirm", "fixtures/models/gate.py:make", "--device", "cpu",
            "--push-steps", "0"]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(master)
    tty_err = b"".join(chunks).decode()
    assert "regime example" in tty_err and "regime zeros" in tty_err
    piped = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert piped.stdout == proc.stdout.read().decode()
    assert "regime" not in piped.stderr


def test_notebook_fix_never_puts_an_added_import_into_a_shell_cell(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": "%%bash\necho hi"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%matplotlib inline\nfrom torch import tanh\nh = x * (1 + tanh(s))"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    proc = run("fix", "--unsafe-fixes", "--min-confidence", "medium", "n.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = json.loads((tmp_path / "n.ipynb").read_text())["cells"]
    assert cells[0]["source"] == "%%bash\necho hi"
    assert cells[1]["source"] == ("%matplotlib inline\nfrom torch import tanh\nimport torch\n"
                                  "h = x * (torch.sigmoid(s) + 0.5)")


def test_notebook_answers_are_the_same_from_the_cache(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": HAZARD + "y = torch.exp(z)  # noqa: NL999\n"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "c.ipynb").write_text(json.dumps(nb, indent=1))
    cold = run("check", "c.ipynb", cwd=tmp_path)
    warm = run("check", "c.ipynb", cwd=tmp_path)
    assert (tmp_path / ".nanlint_cache").is_dir()
    assert cold.returncode == warm.returncode == 1
    assert (cold.stdout, cold.stderr) == (warm.stdout, warm.stderr)
    assert "c.ipynb:cell 1:4:12: NL002" in warm.stdout
