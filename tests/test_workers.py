"""Worker processes (issue 12): a worker that dies costs only its file; workers
end with the parent, and promptly when the run is interrupted, even inside a
long native parse."""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from nanlint.runner import map_files

HAZARD = "import torch\n\ndef f(logvar):\n    return torch.exp(logvar)\n"
# libcst parses each statement in about 0.3 s: the file keeps a worker inside
# native code for a minute (within the nesting limits, so it is not refused)
SLOW = "import torch\n" + "".join(
    f"y{i} = torch.exp(x) + " + " + ".join(["a"] * 900) + "\n" for i in range(200))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _fail_on(path: Path) -> str:
    if path.name.startswith("segv"):
        faulthandler.disable()  # pytest's handler would print the stack
        os.kill(os.getpid(), signal.SIGSEGV)
    if path.name.startswith("exit"):
        os._exit(3)
    if path.name.startswith("raise"):
        raise ValueError("boom")
    return path.name


@pytest.mark.parametrize("jobs", [2, 3])
def test_a_dying_worker_costs_only_its_file(jobs):
    names = [f"a{i}.py" for i in range(7)] + ["segv1.py", "raise.py"] + [f"b{i}.py" for i in range(7)]
    names += ["exit.py", "segv2.py", "c.py"]
    results = map_files(_fail_on, [Path(n) for n in names], jobs, lambda p, why: (p.name, why))
    assert len(results) == len(names)
    for name, result in zip(names, results):
        if name.startswith("segv"):
            assert result == (name, "the worker process died while checking it (killed by SIGSEGV); not checked")
        elif name.startswith("exit"):
            assert result == (name, "the worker process died while checking it (exit code 3); not checked")
        elif name.startswith("raise"):
            assert result == (name, "internal error: ValueError: boom")
        else:
            assert result == name


def _children(pid: int) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_busy(tmp_path: Path, command: str):
    for name in ("slow1.py", "slow2.py"):
        (tmp_path / name).write_text(SLOW)
    for i in range(4):
        (tmp_path / f"ok{i}.py").write_text(HAZARD)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanlint", command, "--no-cache", "--jobs=2", "slow1.py", "slow2.py",
         *(f"ok{i}.py" for i in range(4))],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(_children(proc.pid)) < 2:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) == 2
    time.sleep(1.5)  # both workers are inside the native parse of a slow file
    return proc, workers


def _reap(workers: List[int]) -> List[int]:
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them behind when the test fails
        os.kill(w, signal.SIGKILL)
    return left


def test_kill_9_of_the_parent_ends_its_workers_and_releases_the_callers_pipes(tmp_path):
    proc, workers = _start_busy(tmp_path, "check")
    proc.kill()
    proc.communicate(timeout=30)  # the workers held stdout/stderr open for a minute
    assert _reap(workers) == []


def test_sigterm_stops_fix_during_a_long_native_parse(tmp_path):
    proc, workers = _start_busy(tmp_path, "fix")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)  # not after the minute-long parses
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _reap(workers) == []
    assert (tmp_path / "slow1.py").read_text() == SLOW
    assert (tmp_path / "slow2.py").read_text() == SLOW
    assert not list(tmp_path.glob("*.nanlint-tmp")) and not list(tmp_path.glob(".*.nanlint-tmp"))
