"""Attacks on nanlint's file handling (issue 12): what it reads, what it writes,
what it prints. Every case runs the CLI in a subprocess, as a user would, and
checks that other files and the checked tree are unharmed."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HAZARD = "import torch\n\ndef f(logvar):\n    return torch.exp(logvar)\n"
FIXED_FRAGMENT = "torch.exp(logvar.clamp(max="
POSIX = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types")


def run(*args, cwd, timeout=300, preexec_fn=None):
    # the snippets' hazards (`torch.exp` of a function's parameter) are low-confidence
    # findings: these tests are about reading, writing and reporting, so they show every confidence
    if args and args[0] in ("check", "fix"):
        args = (args[0], "--min-confidence", "low", *args[1:])
    # the timeout only stops a hang (a FIFO, /dev/zero) from blocking the suite
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, capture_output=True,
                          text=True, errors="surrogateescape", timeout=timeout, preexec_fn=preexec_fn)


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2), proc.returncode


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


def _memory_cap():
    """1.5 GB of address space: a run that reads a huge or endless file fails
    here instead of taking the machine's memory."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))


# -- reading: regular files only, never more than max-file-size + 1 bytes --------------


@POSIX
@pytest.mark.parametrize("command", ["check", "fix"])
def test_special_files_are_not_read(tmp_path, command):
    (tmp_path / "ok.py").write_text(HAZARD)
    (tmp_path / "evil.py").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.py")
    proc = run(command, "--no-cache", "--unsafe-fixes" if command == "fix" else "--exit-zero", ".",
               cwd=tmp_path, timeout=120, preexec_fn=_memory_cap)
    no_traceback(proc)
    assert proc.returncode == 2
    assert sorted(error_lines(proc)) == [
        "error: evil.py: is a character device, not a regular file; not read",
        "error: pipe.py: is a named pipe, not a regular file; not read",
    ]
    if command == "check":
        assert "ok.py:4:12: NL002" in proc.stdout
    else:
        assert FIXED_FRAGMENT in (tmp_path / "ok.py").read_text()
    assert os.readlink(tmp_path / "evil.py") == "/dev/zero"


@pytest.mark.parametrize("command", ["check", "fix"])
def test_a_file_over_max_file_size_is_not_read(tmp_path, command):
    """A 3 GB sparse file (no disk used) under a 1.5 GB memory cap: reading it
    whole fails; checking its size first skips it with the usual warning."""
    big = tmp_path / "big.py"
    with open(big, "wb") as handle:
        handle.truncate(3_000_000_000)
    (tmp_path / "ok.py").write_text(HAZARD)
    proc = run(command, "--no-cache", "-j", "1", "big.py", "ok.py", cwd=tmp_path, preexec_fn=_memory_cap)
    no_traceback(proc)
    assert proc.returncode in (0, 1), proc.stderr
    assert "warning: big.py: skipped, 3,000,000,000 bytes is over max-file-size" in proc.stderr
    assert big.stat().st_size == 3_000_000_000


# -- .gitignore patterns: git's semantics, in linear time -------------------------------


def _git_ignored(repo: Path, pattern: str, paths):
    (repo / ".gitignore").write_bytes(pattern.encode("utf-8", "surrogateescape") + b"\n")
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z"], cwd=repo,
                          input=b"\0".join(p.encode() for p in paths) + b"\0", capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr
    return {p.decode() for p in proc.stdout.split(b"\0") if p}


def _random_pattern(rng: random.Random) -> str:
    atoms = ["a", "b", "é", "*", "**", "?", "/", "[ab]", "[!a]", "[a-b]", "[z-a]", "[", "]", "\\*", "-",
             "[[:alpha:]]", "[[:bogus:]]", "\\", "[]a]", "[\\]]"]
    while True:
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 7)))
        if not text.startswith(("!", "#")) and not text.endswith(("/", " ")) and text.strip("/"):
            return text


def _random_path(rng: random.Random) -> str:
    parts = ["".join(rng.choice("ab*?[]-é\\") for _ in range(rng.randint(1, 4)))
             for _ in range(rng.randint(1, 3))]
    return "/".join(parts)


@pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0,
                    reason="needs git")
def test_gitignore_patterns_match_as_git_matches_them(tmp_path):
    from nanlint.gitignore import parse

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    rng = random.Random(12)
    for _ in range(150):
        pattern = _random_pattern(rng)
        paths = sorted({_random_path(rng) for _ in range(40)} | {"a", "b/a", "ab", "é", "a/b/a"})
        expected = _git_ignored(tmp_path, pattern, paths)
        (rule,) = parse(pattern + "\n")
        glob = rule[0]
        # git ignores a path when it, or a directory above it, matches
        ours = {p for p in paths if any(glob.match("/".join(p.split("/")[:n]))
                                         for n in range(1, p.count("/") + 2))}
        assert ours == expected, pattern


def test_pathological_gitignore_lines(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("[z-a].py\n[unclosed\n" + "*a" * 12 + "*b\n")
    (tmp_path / ("a" * 60 + ".py")).write_text(HAZARD)
    (tmp_path / "z.py").write_text(HAZARD)  # git ignores it: `[z-a]` holds the `z` it starts with
    # a backtracking matcher would run for years on the 60-character name; the timeout only stops a hang
    proc = run("check", "--no-cache", "--show-files", cwd=tmp_path, timeout=120)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["a" * 60 + ".py"]


# -- fix: where it writes, and what it keeps -----------------------------------------------


def test_fix_does_not_write_through_a_symlink_that_leaves_the_project(tmp_path):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "pkg").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.py").write_text(HAZARD)
    (repo / "common.py").write_text(HAZARD)
    (repo / "link.py").symlink_to("../outside/victim.py")
    (repo / "pkg" / "inner.py").symlink_to("../common.py")  # inside the project: written through
    proc = run("fix", "--unsafe-fixes", "--no-cache", "link.py", "pkg/inner.py", cwd=repo)
    no_traceback(proc)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith("error: link.py: is a symlink to ") and "outside the project" in line
    assert (outside / "victim.py").read_text() == HAZARD
    assert os.readlink(repo / "link.py") == "../outside/victim.py"
    assert os.readlink(repo / "pkg" / "inner.py") == "../common.py"
    assert FIXED_FRAGMENT in (repo / "common.py").read_text()


def test_fix_keeps_hard_links(tmp_path):
    (tmp_path / "a.py").write_text(HAZARD)
    os.link(tmp_path / "a.py", tmp_path / "b.py")
    proc = run("fix", "--unsafe-fixes", "--no-cache", "a.py", cwd=tmp_path)
    no_traceback(proc)
    assert proc.returncode == 2
    assert error_lines(proc) == [
        "error: a.py: has 2 hard links: replacing it would detach them, and writing in place would "
        "change every linked copy; left untouched"]
    assert os.path.samefile(tmp_path / "a.py", tmp_path / "b.py")
    assert (tmp_path / "b.py").read_text() == HAZARD


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file away")
def test_fix_as_root_keeps_owner_group_and_mode(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    os.chown(target, 12345, 23456)
    target.chmod(0o640)
    proc = run("fix", "--unsafe-fixes", "--no-cache", "m.py", cwd=tmp_path)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    st = target.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (12345, 23456, 0o640)
    assert FIXED_FRAGMENT in target.read_text()


# A read-only directory (EACCES, EROFS) or no free inodes (ENOSPC) makes the
# temp file impossible to create; injected here, since root may write anywhere.
INJECT = """
import errno, os, sys
real = os.open
def fail(path, flags, *args, **kwargs):
    if str(path).endswith(".nanlint-tmp"):
        raise OSError(errno.{code}, os.strerror(errno.{code}), str(path))
    return real(path, flags, *args, **kwargs)
os.open = fail
from nanlint.cli import main
sys.argv = ["nanlint", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("code", ["EACCES", "EROFS", "ENOSPC"])
def test_fix_cannot_create_its_temp_file(tmp_path, code):
    (tmp_path / "m.py").write_text(HAZARD)
    (tmp_path / "ok.py").write_text(HAZARD)
    proc = subprocess.run([sys.executable, "-c", INJECT.format(code=code), "fix", "--min-confidence", "low", "--unsafe-fixes",
                           "--no-cache", "m.py"], cwd=tmp_path, capture_output=True, text=True)
    no_traceback(proc)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(f"error: m.py: cannot create a temporary file in {tmp_path}: ")
    assert os.strerror(getattr(errno, code)) in line and line.endswith("left untouched")
    assert (tmp_path / "m.py").read_text() == HAZARD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py", "ok.py"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_fix_removes_the_temp_files_a_killed_run_left_and_nothing_else(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    dead = tmp_path / f".m.py.{_dead_pid()}.0123456789abcdef.nanlint-tmp"
    alive = tmp_path / f".m.py.{os.getpid()}.0123456789abcdef.nanlint-tmp"
    other_file = tmp_path / f".n.py.{_dead_pid()}.0123456789abcdef.nanlint-tmp"
    odd = tmp_path / ".m.py.notapid.nanlint-tmp"
    for p in (dead, alive, other_file, odd):
        p.write_text("partial")
    proc = run("fix", "--unsafe-fixes", "--no-cache", "m.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.py", alive.name, other_file.name, odd.name])


# -- output: a file name cannot forge a line or break XML -----------------------------------


@POSIX
def test_control_characters_in_a_file_name_cannot_forge_output(tmp_path):
    name = "a.py\nfake.py:1:1: NL999 [forged] gotcha\x01.py"
    (tmp_path / name).write_text(HAZARD)
    proc = run("check", "--no-cache", ".", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("Found 1 finding.")
    assert lines[0].startswith('"a.py\\nfake.py:1:1: NL999 [forged] gotcha\\x01.py":4:12: NL002')
    junit = run("check", "--no-cache", "--output-format", "junit", ".", cwd=tmp_path)
    root = ET.fromstring(junit.stdout)  # XML 1.0 cannot hold \x01: it must be escaped
    (case,) = root.iter("testcase")
    assert case.get("file") == "a.py\\nfake.py:1:1: NL999 [forged] gotcha\\x01.py"
    data = json.loads(run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path).stdout)
    assert data[0]["path"] == name  # JSON can hold any name: it is the real one


@POSIX
@pytest.mark.parametrize("output_format", ["text", "json", "github", "sarif", "junit"])
def test_a_file_name_that_is_not_utf8(tmp_path, output_format):
    (tmp_path / os.fsdecode(b"bad\xff.py")).write_text(HAZARD)
    proc = run("check", "--no-cache", "--output-format", output_format, ".", cwd=tmp_path)
    no_traceback(proc)
    assert proc.returncode == 1
    if output_format == "text":
        assert proc.stdout.startswith('"bad\\xff.py":4:12: NL002')
    elif output_format == "sarif":
        (result,) = json.loads(proc.stdout)["runs"][0]["results"]
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "bad%FF.py"
    elif output_format == "junit":
        assert ET.fromstring(proc.stdout).find("testsuite").get("name") == "bad\\xff.py"


# -- notebooks ----------------------------------------------------------------------------------


def test_a_deeply_nested_notebook_is_a_clear_error(tmp_path):
    (tmp_path / "deep.ipynb").write_text('{"cells": [], "metadata": ' + "[" * 5000 + "]" * 5000 + "}")
    (tmp_path / "ok.py").write_text(HAZARD)
    for command in ("check", "fix"):
        proc = run(command, "--no-cache", ".", cwd=tmp_path)
        no_traceback(proc)
        assert proc.returncode == 2
        (line,) = error_lines(proc)
        assert line.startswith("error: deep.ipynb: not a valid notebook: ") and "nested too deeply" in line


def _notebook(source) -> str:
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1)


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
@pytest.mark.parametrize("style", ["string", "lines"])
def test_fix_keeps_a_cells_line_endings(tmp_path, ending, style):
    text = ending.join(["import torch", "", "def f(logvar):", "    return torch.exp(logvar)", "y = 1"])
    source = text if style == "string" else [line + ending for line in text.split(ending)]
    (tmp_path / "n.ipynb").write_text(_notebook(source))
    proc = run("fix", "--unsafe-fixes", "--no-cache", "n.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cell = json.loads((tmp_path / "n.ipynb").read_text())["cells"][0]["source"]
    fixed = cell if isinstance(cell, str) else "".join(cell)
    assert FIXED_FRAGMENT in fixed
    assert set(re.findall(r"\r\n|\r|\n", fixed)) == {ending}  # the added import line too


@POSIX
def test_project_facts_never_read_special_files(tmp_path):
    """The facts read across a project (who imports a function, whether the
    project trains) walk every module: a FIFO or a symlink to /dev/zero among
    them is skipped, not read (a read would hang or never end)."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/ops.py").write_text(HAZARD)
    (tmp_path / "pkg/zero.py").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pkg/pipe.py")
    (tmp_path / "pkg/train.py").write_text("from pkg.ops import f\n\n\ndef g(x):\n    return f(x.float())\n")
    proc = run("check", "--no-cache", "--exit-zero", "pkg/ops.py", "pkg/train.py", cwd=tmp_path, timeout=120,
               preexec_fn=_memory_cap)
    no_traceback(proc)
    assert error_lines(proc) == []
    assert proc.returncode == 0
