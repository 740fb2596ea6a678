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
