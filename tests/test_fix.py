"""`nanlint fix` / `check --fix`: applies fixes without ever corrupting a file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nanlint.dtypes import FLOAT16
from nanlint.engine import lint_source
from nanlint.finding import UNSAFE
from nanlint.fix import WriteError, fix_text, write_atomic
from nanlint.rule import FixSpec, Rule

HAZARD = "import torch\n\n\ndef f(logvar):\n    return torch.exp(logvar)  # a comment\n"
FIXED = (
    "import math\nimport torch\n\n\ndef f(logvar):\n"
    "    return torch.exp(logvar.clamp(max=math.log(torch.finfo(logvar.dtype).max) - 0.01))  # a comment\n"
)


def run(*args, cwd=None, stdin=None):
    # HAZARD (`torch.exp` of a function's parameter) is a low-confidence NL002
    # finding: these tests are about fixing, so they show every confidence
    if args and args[0] in ("check", "fix"):
        args = (args[0], "--min-confidence", "low", *args[1:])
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True)


def test_safe_only_by_default_then_unsafe(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    proc = run("fix", "m.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert target.read_text() == HAZARD
    assert "1 more fix available with `--unsafe-fixes`" in proc.stdout
    proc = run("fix", "--unsafe-fixes", "m.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert target.read_text() == FIXED
    assert "Fixed 1 finding in 1 file (1 NL002)." in proc.stdout
    # idempotent: a second run changes nothing
    proc = run("fix", "--unsafe-fixes", "m.py", cwd=tmp_path)
    assert proc.returncode == 0 and target.read_text() == FIXED
    assert "Fixed 0 findings" in proc.stdout
    compile(target.read_text(), "m.py", "exec")
    assert run("check", "m.py", cwd=tmp_path).returncode == 0


def test_check_fix_is_the_same_command(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    proc = run("check", "--fix", "--unsafe-fixes", "m.py", cwd=tmp_path)
    assert proc.returncode == 0 and target.read_text() == FIXED


def test_diff_writes_nothing_and_exits_1(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    proc = run("fix", "--unsafe-fixes", "--diff", "m.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert target.read_text() == HAZARD
    assert proc.stdout.startswith("--- a/m.py\n+++ b/m.py\n")
    assert "+import math" in proc.stdout
    assert "Would fix 1 finding" in proc.stderr
    clean = tmp_path / "c.py"
    clean.write_text("x = 1\n")
    assert run("fix", "--diff", "c.py", cwd=tmp_path).returncode == 0


def test_stdin_prints_fixed_source(tmp_path):
    proc = run("fix", "--unsafe-fixes", "-", stdin=HAZARD, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == FIXED


@pytest.mark.parametrize(
    "raw",
    [
        HAZARD.replace("\n", "\r\n").encode(),
        b"\xef\xbb\xbf" + HAZARD.encode(),
        ("# -*- coding: latin-1 -*-\n# caf\xe9\n" + HAZARD).encode("latin-1"),
        HAZARD.replace("    return", "\treturn").encode(),
    ],
    ids=["crlf", "bom", "latin1", "tabs"],
)
def test_encoding_bom_and_line_endings_are_preserved(tmp_path, raw):
    target = tmp_path / "m.py"
    target.write_bytes(raw)
    proc = run("fix", "--unsafe-fixes", "m.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = target.read_bytes()
    assert new.startswith(b"\xef\xbb\xbf") == raw.startswith(b"\xef\xbb\xbf")
    if b"\r\n" in raw:
        assert new.count(b"\r\n") == new.count(b"\n")
    if b"latin-1" in raw:
        assert "caf\xe9".encode("latin-1") in new
    assert b"import math" in new and b".clamp(max=math.log(" in new
    # nothing but the edits changed
    assert new.replace(b"import math" + (b"\r\n" if b"\r\n" in raw else b"\n"), b"", 1).replace(
        b".clamp(max=math.log(torch.finfo(logvar.dtype).max) - 0.01)", b"") == raw


def test_permissions_kept_and_symlink_written_through(tmp_path):
    real = tmp_path / "real.py"
    real.write_text(HAZARD)
    os.chmod(real, 0o640)
    link = tmp_path / "link.py"
    link.symlink_to(real)
    proc = run("fix", "--unsafe-fixes", "link.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink()
    assert real.read_text() == FIXED
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".nanlint-tmp")]


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else False,
                    reason="root can write read-only files; covered by the os.access check below")
def test_read_only_file_reported(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    os.chmod(target, 0o444)
    proc = run("fix", "--unsafe-fixes", "m.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "read-only" in proc.stderr
    assert target.read_text() == HAZARD


def test_read_only_check_in_writer(tmp_path, monkeypatch):
    target = tmp_path / "m.py"
    target.write_text("a\n")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(WriteError, match="read-only"):
        write_atomic(target, b"b\n", b"a\n")
    assert target.read_text() == "a\n"


def test_file_changed_on_disk_is_not_overwritten(tmp_path):
    target = tmp_path / "m.py"
    target.write_text("edited by the user\n")
    with pytest.raises(WriteError, match="changed on disk"):
        write_atomic(target, b"ours\n", b"what we read\n")
    assert target.read_text() == "edited by the user\n"


class _BreaksTheFile(Rule):
    code = "NL998"
    name = "breaks-the-file"

    def visit_Call(self, node):
        self.report(node, "bad fix", FixSpec(UNSAFE, "breaks", replace=[(node, "f(")]))


def test_fix_that_would_not_parse_is_dropped_and_reported():
    source = "f()\ng = 1\n"

    def lint(text):
        result = lint_source(text, "m.py", [_BreaksTheFile], [FLOAT16])
        return result.findings, result.errors

    outcome = fix_text(source, lint, unsafe=True)
    assert outcome.text == source
    assert outcome.dropped and "would not parse" in outcome.dropped[0]
    assert sum(outcome.applied.values()) == 0


def test_fix_reports_unreadable_and_missing_paths_and_continues(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    (tmp_path / "bad.py").write_bytes(b"x = '\xff'\n")
    proc = run("fix", "--unsafe-fixes", "m.py", "bad.py", "missing.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.py: cannot decode" in proc.stderr and "missing.py" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert target.read_text() == FIXED


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_mid_fix_leaves_every_file_old_or_new(tmp_path, jobs):
    import signal
    import time

    (tmp_path / "one.py").write_text(HAZARD)
    assert run("fix", "--unsafe-fixes", "one.py", cwd=tmp_path).returncode == 0
    fixed = (tmp_path / "one.py").read_text()
    tree = tmp_path / "tree"
    tree.mkdir()
    padding = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n\n" for i in range(300))
    for i in range(120):
        (tree / f"m{i:03d}.py").write_text(HAZARD + padding)
    proc = subprocess.Popen([sys.executable, "-m", "nanlint", "fix", "--min-confidence", "low", "--unsafe-fixes", "--no-cache",
                             f"--jobs={jobs}", "tree"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until fixing is under way
        if any("import math" in p.read_text() for p in tree.glob("m*.py")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    assert proc.returncode in (0, 130), err
    states = set()
    for path in tree.glob("m*.py"):
        text = path.read_text()
        body = text[: len(text) - len(padding)]
        assert text.endswith(padding)
        assert body in (HAZARD, fixed.replace(padding, "")), path
        states.add(body == HAZARD)
    assert not list(tree.glob("*.nanlint-tmp"))
    if proc.returncode == 130:
        assert "interrupted" in err


# -- nested sites and scale (issue 12) -----------------------------------------------------

NESTED = {
    "mask_chain": lambda n: "def f(x, m):\n    return x" + ".masked_fill(m, -1e9)" * n + "\n",
    "nested_exp": lambda n: "def f(x):\n    return " + "torch.exp(" * n + "x" + ")" * n + "\n",
    "exp_then_masks": lambda n: "def f(x, m):\n    return torch.exp(x)" + ".masked_fill(m, -1e9)" * n + "\n",
    "nested_where": lambda n: "def f(x, m):\n    return " + "torch.where(m, " * n + "torch.exp(x)" + ", -1e9)" * n + "\n",
    "fill_of_fill": lambda n: "def f(x, m):\n    y = x\n" + "".join(
        f"    y = y.masked_fill(m{i}, -1e9).masked_fill(m, float('-inf'))\n" for i in range(n)) + "    return y\n",
}


@pytest.mark.parametrize("n", [2, 10, 20])
def test_nested_sites_are_fixed_once_each(tmp_path, n):
    """A fix that copies the text of another site (the receiver of the next
    link of a chain) must not be applied in the same round as that site's own
    fix: 10 links once gave 1,023 fixes and 42 KB, 20 links never ended."""
    import json

    for name, make in NESTED.items():
        (tmp_path / f"{name}.py").write_text("import torch\n\n" + make(n))
    before = {p.name: p.read_text() for p in tmp_path.glob("*.py")}
    found = json.loads(run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path).stdout)
    fixable = {name: sum(1 for f in found if f["path"] == name and f["fix"]) for name in before}
    proc = subprocess.run([sys.executable, "-m", "nanlint", "fix", "--min-confidence", "low", "--unsafe-fixes", "--no-cache",
                           "--output-format", "json", "."], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert "Traceback" not in proc.stderr and proc.returncode in (0, 1), proc.stderr
    applied = run("fix", "--unsafe-fixes", "--no-cache", "--diff", ".", cwd=tmp_path)
    assert applied.stdout == ""  # a second run finds nothing more to fix: nothing was copied unfixed
    for name, old in before.items():
        new = (tmp_path / name).read_text()
        compile(new, name, "exec")
        # each site's fix adds at most one clamp or finfo expression (and an import)
        assert len(new) <= len(old) + 120 * max(fixable[name], 1), (name, len(new))
        assert new.count("masked_fill(") == old.count("masked_fill("), name
        assert new.count("torch.exp(") == old.count("torch.exp("), name


def _peak_rss(args, cwd) -> int:
    """Peak resident memory (kB) of one nanlint run."""
    proc = subprocess.Popen([sys.executable, "-m", "nanlint", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode in (0, 1), proc.returncode
    return usage.ru_maxrss


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs wait4")
@pytest.mark.parametrize("shape", ["table", "one_line"])
def test_fix_of_a_large_data_file_needs_the_memory_check_needs(tmp_path, shape):
    """`fix` re-parses its result with the data blanking `check` uses: with
    `max-file-size = 0` a 3.5 MB table took 2.6 GB to fix (and a one-line
    300,000-element list over 300 s). Memory of both measured in one run."""
    if shape == "table":
        row = "    [" + ", ".join(f"{i * 0.5}" for i in range(20)) + "],\n"
        data = "TABLE = [\n" + row * (700_000 // len(row)) + "]\n"
    else:
        data = "DATA = [" + ", ".join(str(i) for i in range(100_000)) + "]\n"
    (tmp_path / "pyproject.toml").write_text("[tool.nanlint]\nmax-file-size = 0\n")
    (tmp_path / "m.py").write_text("import torch\n" + data + "\ndef f(logvar):\n    return torch.exp(logvar)\n")
    check = _peak_rss(["check", "--min-confidence", "low", "--no-cache", "m.py"], tmp_path)
    fix = _peak_rss(["fix", "--min-confidence", "low", "--unsafe-fixes", "--no-cache", "m.py"], tmp_path)
    fixed = (tmp_path / "m.py").read_text()
    assert "torch.exp(logvar.clamp(" in fixed and data in fixed
    assert fix < 1.5 * check, (fix, check)
