"""CLI behaviour a ruff user would otherwise call a bug: interrupts, errors
without a success line, the cache directory's precedence, NL000 as an
ignorable pseudo-rule, flags that used to do nothing silently, noqa with rule
names, the summary sentence, help texts, notebook fix edits in JSON, two
configuration files side by side, and where an added import goes."""

from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_cli import CLEAN, HAZARD
from test_cli import run as _run


def run(*args, **kw):
    # the snippets' hazards (`torch.exp` of a function's parameter) are low-confidence
    # findings: these tests are about reading, writing and reporting, so they show every confidence
    if args and args[0] in ("check", "fix"):
        args = (args[0], "--min-confidence", "low", *args[1:])
    return _run(*args, **kw)

BROKEN = "print 'python 2'\n"
# NL002 (unsafe fix) and NL006 (unsafe fix) on the same line
TWO_ON_A_LINE = "import torch\n\ndef f(x, b):\n    return torch.exp(x) * (1 + torch.tanh(b)){}\n"
MASK = "import torch\n\ndef f(s, m):\n    return s.masked_fill(m, -1e9)\n"  # NL003: a safe fix


def test_ctrl_c_during_check_exits_130_not_1(tmp_path):
    """A real SIGINT while `check` is busy (a large file takes seconds to parse
    and check): the interrupt code 130, as `fix` has, not 1, the code for findings."""
    (tmp_path / "pyproject.toml").write_text("[tool.nanlint]\nmax-file-size = 0\n")
    big = tmp_path / "big.py"
    big.write_text("import torch\n" + "".join(f"y{i} = torch.exp(x{i}) + torch.log(p{i})\n" for i in range(60000)))
    # SIGINT as a terminal gives it: not ignored, even when this suite runs as a background
    # job of a shell without job control (which starts its children with SIGINT ignored)
    proc = subprocess.Popen([sys.executable, "-m", "nanlint", "check", "--no-cache", "--min-confidence", "low", "-j", "1", "big.py"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(2.0)  # started, and busy with the file
        assert proc.poll() is None, "check finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert err == "error: interrupted\n"
    assert "All checks passed" not in out


def test_a_missing_path_is_exit_2_without_a_success_line(tmp_path):
    proc = run("check", "does/not/exist.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "error: does/not/exist.py: no such file or directory\n"
    stats = run("check", "--statistics", "does/not/exist.py", cwd=tmp_path)
    assert (stats.returncode, stats.stdout) == (2, "")


@pytest.mark.parametrize("given", [c for n in range(4) for c in itertools.combinations(("flag", "env", "config"), n)])
def test_cache_dir_precedence_is_flag_then_env_then_config_then_default(tmp_path, given):
    """Every combination: the cache lands in exactly the directory of the
    highest-precedence source given, and nowhere else."""
    (tmp_path / "bad.py").write_text(HAZARD)
    args, env = ["check", "."], {"NANLINT_CACHE_DIR": ""}
    if "flag" in given:
        args[1:1] = ["--cache-dir", "from-flag"]
    if "env" in given:
        env["NANLINT_CACHE_DIR"] = "from-env"
    if "config" in given:
        (tmp_path / "pyproject.toml").write_text('[tool.nanlint]\ncache-dir = "from-config"\n')
    assert run(*args, cwd=tmp_path, env=env).returncode == 1
    candidates = ["from-flag", "from-env", "from-config", ".nanlint_cache"]
    expected = next(f"from-{g}" for g in ("flag", "env", "config") if g in given) if given else ".nanlint_cache"
    assert [c for c in candidates if (tmp_path / c).is_dir()] == [expected]
    shown = run("check", "--show-settings", *args[1:-1], cwd=tmp_path, env=env).stdout
    origin = {"flag": "command line", "env": "environment (NANLINT_CACHE_DIR)", "config": "config"}
    assert f"# {origin[given[0]] if given else 'default'}" in next(
        line for line in shown.splitlines() if line.startswith("cache-dir ="))


def test_nl000_is_a_documented_pseudo_rule_that_can_be_ignored(tmp_path):
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "bad.py").write_text(HAZARD)
    doc = run("rule", "NL000")
    assert doc.returncode == 0 and doc.stdout.startswith("NL000 syntax-error\n") and "--ignore NL000" in doc.stdout
    assert "NL000" in run("rule", "--all").stdout
    # on whatever --select says, off only when ignored
    assert "broken.py:1:1: NL000 [syntax-error]" in run("check", "--select", "NL002", ".", cwd=tmp_path).stdout
    for args in (["--ignore", "NL000"], ["--ignore", "NL00", "--extend-select", "NL002"]):
        proc = run("check", *args, ".", cwd=tmp_path)
        assert proc.returncode == 1 and "NL000" not in proc.stdout and "bad.py:4:12: NL002" in proc.stdout, args
    (tmp_path / "pyproject.toml").write_text('[tool.nanlint.per-file-ignores]\n"broken.py" = ["NL000"]\n')
    proc = run("check", "broken.py", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "All checks passed!\n")
    # the cache answers the same once the setting changes
    (tmp_path / "pyproject.toml").write_text("")
    assert run("check", "broken.py", cwd=tmp_path).returncode == 1


def test_nl000_ignored_in_a_notebook_with_a_deliberately_broken_cell(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": ["x = (1,\n"]},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": HAZARD}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "lesson.ipynb").write_text(json.dumps(nb))
    proc = run("check", "--ignore", "NL000", "lesson.ipynb", cwd=tmp_path)
    assert proc.returncode == 1
    assert [line.split(": ")[1].split()[0] for line in proc.stdout.splitlines()[:-1]] == ["NL002"]


def test_statistics_as_json(tmp_path):
    (tmp_path / "bad.py").write_text(HAZARD * 2)
    (tmp_path / "mask.py").write_text(MASK)
    proc = run("check", "--statistics", "--output-format", "json", ".", cwd=tmp_path)
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == [
        {"code": "NL002", "name": "unclamped-exp", "count": 2, "fixable": 2},
        {"code": "NL003", "name": "nonfinite-mask", "count": 1, "fixable": 1},
    ]
    for fmt in ("github", "sarif", "junit"):
        proc = run("check", "--statistics", "--output-format", fmt, ".", cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == f"error: --statistics works with --output-format text or json, not {fmt}\n"


def test_unsafe_fixes_without_fix_warns_and_changes_nothing(tmp_path):
    (tmp_path / "bad.py").write_text(HAZARD)
    proc = run("check", "--unsafe-fixes", "bad.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == ("warning: --unsafe-fixes does nothing without --fix or --diff "
                           "(or use `nanlint fix --unsafe-fixes`)\n")
    assert (tmp_path / "bad.py").read_text() == HAZARD
    assert run("check", "--unsafe-fixes", "--fix", "bad.py", cwd=tmp_path).stderr == ""


@pytest.mark.parametrize("comment, remaining, warning", [
    ("  # noqa: unclamped-exp", ["NL006"], ""),
    ("  # noqa: tanh-gate, NL002", [], ""),
    ("  # noqa: UNCLAMPED-EXP", ["NL006"], ""),
    ("  # noqa: unclamped-expo", ["NL002", "NL006"],
     "warning: m.py:4: unknown rule name `unclamped-expo` in `# noqa` (see `nanlint rule --all`)\n"),
    ("  # noqa", [], ""),
    ("  # noqa: E501", ["NL002", "NL006"], ""),
])
def test_noqa_accepts_rule_names(tmp_path, comment, remaining, warning):
    (tmp_path / "m.py").write_text(TWO_ON_A_LINE.format(comment))
    proc = run("check", "--output-format", "json", "m.py", cwd=tmp_path)
    assert [f["code"] for f in json.loads(proc.stdout)] == remaining
    assert proc.stderr == warning


@pytest.mark.parametrize("files, summary", [
    ({"bad.py": HAZARD}, "Found 1 finding. 1 fixable with `nanlint fix --unsafe-fixes`."),
    ({"mask.py": MASK}, "Found 1 finding. 1 fixable with `nanlint fix`."),
    ({"bad.py": HAZARD, "mask.py": MASK},
     "Found 2 findings. 1 fixable with `nanlint fix`, 1 more with `nanlint fix --unsafe-fixes`."),
    ({"broken.py": BROKEN}, "Found 1 finding."),
])
def test_summary_is_one_clear_sentence_per_kind_of_fix(tmp_path, files, summary):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert run("check", ".", cwd=tmp_path).stdout.splitlines()[-1] == summary


def test_help_lists_whole_command_summaries():
    proc = run("--help")
    commands = proc.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in commands] == ["check", "confirm", "fix", "rule"]
    for line in commands:
        text = line.split(None, 1)[1]
        assert text.endswith(".") or text.endswith("?"), line
        assert not text.endswith("..."), line


def test_notebook_json_edits_are_cell_relative_or_null(tmp_path):
    """A fix inside one cell has edits relative to that cell; a fix that also
    adds an import to another cell has `"edits": null` (not an empty list),
    and `nanlint fix` applies it."""
    cells = ["import torch\n", "def f(x):\n    return torch.exp(x)\n", MASK]
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": source} for source in cells],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    found = {f["code"]: f for f in json.loads(run("check", "--output-format", "json", "n.ipynb",
                                                   cwd=tmp_path).stdout)}
    assert found["NL002"]["cell"] == 2 and found["NL002"]["fix"]["edits"] is None
    assert found["NL002"]["fix"]["applicability"] == "unsafe"
    edits = found["NL003"]["fix"]["edits"]
    assert found["NL003"]["cell"] == 3 and len(edits) == 1
    line = MASK.splitlines()[edits[0]["line"] - 1]
    assert line[edits[0]["column"] - 1:edits[0]["end_column"] - 1] == "-1e9"
    assert run("fix", "--unsafe-fixes", "n.ipynb", cwd=tmp_path).returncode == 0
    fixed = json.loads(path.read_text())["cells"]
    assert "import math" in "".join(fixed[0]["source"]) and "clamp" in "".join(fixed[1]["source"])


@pytest.mark.parametrize("dedicated", ["nanlint.toml", ".nanlint.toml"])
def test_dedicated_config_file_beats_pyproject_with_a_warning(tmp_path, dedicated):
    (tmp_path / "bad.py").write_text(HAZARD)
    (tmp_path / "pyproject.toml").write_text('[tool.nanlint]\nignore = ["NL002"]\n')
    (tmp_path / dedicated).write_text('select = ["NL00"]\n')
    proc = run("check", ".", cwd=tmp_path)
    assert proc.returncode == 1 and "bad.py:4:12: NL002" in proc.stdout
    assert proc.stderr == (f"warning: {tmp_path.resolve() / dedicated} is used; "
                           "pyproject.toml [tool.nanlint] in the same directory is ignored\n")
    assert f"# settings from: {tmp_path.resolve() / dedicated}" in run(
        "check", "--show-settings", cwd=tmp_path).stdout
    # a pyproject.toml without [tool.nanlint] is not a configuration: no warning
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert run("check", ".", cwd=tmp_path).stderr == ""


STDLIB = ("import os", "from collections import OrderedDict", "import os.path", "from __future__ import annotations")
THIRD = ("import torch", "import numpy as np", "from torch import nn", "from . import sibling")


@pytest.mark.parametrize("layout", [
    ("import torch",), ("import os", "import torch"), ("import torch", "import numpy as np"),
    ('"""Doc."""', "from __future__ import annotations", "import torch", "import numpy as np"),
    ("import os", "from collections import OrderedDict", "import numpy as np", "from torch import nn",
     "import torch", "from . import sibling"),
    ("import torch", "import os"),
])
def test_fix_puts_an_added_stdlib_import_in_the_stdlib_block(tmp_path, layout):
    """`import math` goes after the last standard-library import (before the
    first import when there is none); `import torch` after every import."""
    (tmp_path / "m.py").write_text("\n".join(layout) + "\n\ndef f(x):\n    return torch.exp(x)\n")
    assert run("fix", "--unsafe-fixes", "m.py", cwd=tmp_path).returncode == 0
    lines = (tmp_path / "m.py").read_text().splitlines()
    at = lines.index("import math")
    before = [line for line in lines[:at] if line.startswith(("import", "from"))]
    after = [line for line in lines[at + 1:] if line.startswith(("import", "from"))]
    assert set(before) <= set(STDLIB) | set(THIRD)
    if any(line in STDLIB for line in layout):
        assert before and before[-1] in STDLIB
        assert not any(line in STDLIB for line in after if layout.index(line) > layout.index(before[-1]))
    else:
        assert before == [] and after == [line for line in layout if line.startswith(("import", "from"))]
    compile("\n".join(lines), "m.py", "exec")


def test_fix_adds_torch_after_the_imports(tmp_path):
    (tmp_path / "m.py").write_text("import os\nimport numpy as np\n\ndef f(x):\n    return x.exp()\n")
    assert run("fix", "--unsafe-fixes", "m.py", cwd=tmp_path).returncode == 0
    assert (tmp_path / "m.py").read_text().splitlines()[:4] == [
        "import os", "import math", "import numpy as np", "import torch"]


@pytest.mark.parametrize("command", ["check", "fix"])
def test_help_lists_each_exit_code_once_with_130(command):
    epilog = run(command, "--help").stdout.split("Exit codes:\n", 1)[1]
    codes = [line.split()[0] for line in epilog.splitlines() if line.strip()]
    assert codes == ["0", "1", "2", "130"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_python_syntax_warnings_about_the_checked_code_are_not_printed(tmp_path, jobs):
    """`1if x else y` and `"\\d"` make Python's parser warn; the checked code's warnings are no
    output of nanlint's (a pre-commit hook that prints `<unknown>:1: SyntaxWarning` is noise)."""
    for i in range(3):
        (tmp_path / f"m{i}.py").write_text('x = 1if True else 2\ny = "\\d"\n')
    proc = subprocess.run([sys.executable, "-m", "nanlint", "check", "--no-cache", "-j", jobs, "."],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
