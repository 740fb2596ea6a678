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
