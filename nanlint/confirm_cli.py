"""The `nanlint confirm` command's body: run the target in a child process
(``nanlint.dynamic.worker``) and print what it reports. This process never
imports torch nor runs the target's code, so that the target cannot end it,
write into its report or outlive ``--timeout``."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import click

from .runner import Selection

EXIT_INTERRUPTED = 130


def _fail(message: str) -> int:
    click.echo(f"error: {message}", err=True)
    return 2


def _stop(proc: subprocess.Popen) -> None:
    """Kill the worker and everything it started (its own process group on POSIX)."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _ended(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the target's process was killed by {name}{hint} before confirm finished"
    return (f"the target ended the process with exit status {returncode} (os._exit?) before confirm finished: "
            f"nothing can be concluded from a run that did not complete")


def run_confirm(target_spec: str, selection: Selection, *, device: str, dtype: str, precision: str,
                steps: Optional[int], seed: int, push_steps: int, output_format: str, verbose: bool,
                regimes: Optional[str] = None, timeout: float = 0) -> int:
    limit = None if not timeout or math.isinf(timeout) else timeout
    request = dict(target_spec=target_spec, selection=selection, device=device, dtype=dtype, precision=precision,
                   steps=steps, seed=seed, push_steps=push_steps, regimes=regimes, output_format=output_format,
                   verbose=verbose, parent=os.getpid())
    with tempfile.TemporaryDirectory(prefix="nanlint-confirm-") as tmp:
        request_path, result_path = Path(tmp, "request.pickle"), Path(tmp, "result.json")
        with open(request_path, "wb") as handle:
            pickle.dump(request, handle)
        sys.stdout.flush()
        sys.stderr.flush()

        def terminate(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        proc = None
        try:
            # the target's stdout goes to stderr: stdout carries only the report
            proc = subprocess.Popen([sys.executable, "-m", "nanlint.dynamic.worker", str(request_path),
                                     str(result_path)], stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                                    start_new_session=os.name == "posix")
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                return _fail(f"the target did not finish within --timeout {timeout:g} s; stopped")
        except KeyboardInterrupt:
            click.echo("interrupted: the target was stopped", err=True)
            return EXIT_INTERRUPTED
        finally:
            if proc is not None:
                _stop(proc)  # also what the target left running after the report
            signal.signal(signal.SIGTERM, previous)
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return _fail(_ended(proc.returncode))
    if result["stdout"]:
        click.echo(result["stdout"])
    if result["error"] is not None:
        return _fail(result["error"])
    return int(result["code"])


def run_replay(directory: str, *, output_format: str, verbose: bool) -> int:
    """`nanlint confirm --replay DIR`: replay a guard's repro bundle."""
    try:
        from .dynamic.replay import ReplayError, replay_bundle
    except ImportError:
        return _fail("`nanlint confirm` needs torch: pip install -e '.[dynamic]' in a nanlint checkout, or "
                     "pip install 'nanlint[dynamic] @ git+https://github.com/nanlint/nanlint'")
    try:
        report = replay_bundle(directory)
    except ReplayError as exc:
        return _fail(str(exc))
    except Exception as exc:  # the user's step raised
        return _fail(f"the replayed step raised {type(exc).__name__}: {exc}")
    click.echo(json.dumps(report.to_dict(), indent=2) if output_format == "json" else report.render())
    return 1 if report.origin is not None else 0
