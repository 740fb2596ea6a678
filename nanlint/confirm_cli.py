"""The `nanlint confirm` command's body: load the target, lint its sources,
run the dynamic checker, print the report. torch is imported only from here on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from typing import Dict, Iterator, List, Optional

import click

from .files import display_path
from .runner import Selection, check_file


def _fail(message: str, verbose: bool) -> int:
    lines = [line for line in message.splitlines() if line.strip()]
    click.echo(f"error: {lines[0] if lines else message}", err=True)  # one line, always
    if verbose:
        traceback.print_exc()
    return 2


class _Timeout(BaseException):
    """Raised in the main thread when --timeout expires. A BaseException, so that
    the user's own ``except Exception`` blocks do not swallow it."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``_Timeout`` in the main thread after ``seconds`` (0: no limit).

    POSIX: SIGALRM via ``setitimer``. Elsewhere (Windows), or off the main
    thread: a timer thread interrupts the main thread (``_thread.interrupt_main``)
    and the resulting KeyboardInterrupt is turned into ``_Timeout``. Both take
    effect between Python bytecodes: a single long-running native op (one huge
    matmul) finishes before the target is stopped.
    """
    if not seconds or seconds <= 0:
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    if main and hasattr(signal, "SIGALRM") and hasattr(signal, "setitimer"):
        def on_alarm(signum, frame):
            raise _Timeout()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    import _thread

    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        _thread.interrupt_main()

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except KeyboardInterrupt:
        if fired.is_set():
            raise _Timeout() from None
        raise
    finally:
        timer.cancel()


def _dtype_unsupported(text: str) -> bool:
    if "not implemented for" in text:
        return True
    lowered = text.lower()
    return "not supported" in lowered and any(w in text for w in ("Half", "BFloat16", "dtype"))


def run_confirm(target_spec: str, selection: Selection, *, device: str, dtype: str, precision: str,
                steps: Optional[int], seed: int, push_steps: int, output_format: str, verbose: bool,
                timeout: float = 0) -> int:
    try:
        with deadline(timeout):
            return _run_confirm(target_spec, selection, device=device, dtype=dtype, precision=precision,
                                steps=steps, seed=seed, push_steps=push_steps, output_format=output_format,
                                verbose=verbose)
    except _Timeout:
        return _fail(f"the target did not finish within --timeout {timeout:g} s; stopped", verbose)


def _run_confirm(target_spec: str, selection: Selection, *, device: str, dtype: str, precision: str,
                 steps: Optional[int], seed: int, push_steps: int, output_format: str, verbose: bool) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        return _fail("`nanlint confirm` needs torch: pip install 'nanlint[dynamic]'", verbose)
    from pathlib import Path

    from .dynamic import confirm as dyn
    from .dynamic.target import TargetError, load_target

    import torch

    torch.manual_seed(seed)  # the factory's own random init is part of the run
    try:
        target = load_target(target_spec)
    except TargetError as exc:
        return _fail(str(exc), verbose)
    where = target_spec.rpartition(":")[0]
    factory_file = where if where.endswith(".py") else None
    files = dyn.source_files(target, factory_file)
    findings = []
    abspaths: Dict[str, str] = {}
    for path in files:
        result = check_file(Path(path), selection)
        abspaths[result.path] = os.path.realpath(path)
        findings.extend(f for f in result.findings if f.code != "NL000")
    findings.sort(key=lambda f: f.sort_key())

    tty = sys.stderr.isatty() and not os.environ.get("CI")
    progress = (lambda msg: click.echo(f"  … {msg}", err=True)) if tty else None
    options = dyn.Options(device=device, dtype=dtype, precision=precision, steps=steps, seed=seed,
                          push_steps=push_steps, progress=progress)
    try:
        report = dyn.run(target, options, findings, abspaths)
    except dyn.ConfirmError as exc:
        return _fail(str(exc), verbose)
    except MemoryError:
        return _fail("the model ran out of memory", verbose)
    except RuntimeError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "out of memory" in text.lower():
            return _fail(f"the device ran out of memory: {text}", verbose)
        if _dtype_unsupported(text):
            return _fail(f"an op is not implemented for {dtype} on this device: {text}", verbose)
        return _fail(f"the model raised RuntimeError: {text}", verbose)
    except Exception as exc:  # the user's model code failed
        return _fail(f"the model raised {type(exc).__name__}: {exc}", verbose)

    if output_format == "json":
        click.echo(json.dumps([e.to_dict() for e in report.entries], indent=2))
    else:
        click.echo(render_text(report))
    fired = any(e.status in (dyn.CONFIRMED, dyn.UNFLAGGED) for e in report.entries)
    return 1 if fired else 0


def run_replay(directory: str, *, output_format: str, verbose: bool) -> int:
    """`nanlint confirm --replay DIR`: replay a guard's repro bundle."""
    try:
        from .dynamic.replay import ReplayError, replay_bundle
    except ImportError:
        return _fail("`nanlint confirm` needs torch: pip install 'nanlint[dynamic]'", verbose)
    try:
        report = replay_bundle(directory)
    except ReplayError as exc:
        return _fail(str(exc), verbose)
    except Exception as exc:  # the user's step raised
        return _fail(f"the replayed step raised {type(exc).__name__}: {exc}", verbose)
    click.echo(json.dumps(report.to_dict(), indent=2) if output_format == "json" else report.render())
    return 1 if report.origin is not None else 0


LABELS = {"confirmed": "CONFIRMED", "not_fired": "NOT FIRED", "not_reached": "NOT REACHED", "unflagged": "UNFLAGGED"}


def render_text(report) -> str:
    lines: List[str] = [
        f"nanlint confirm: {report.device}, {report.dtype}, {report.precision}; "
        f"regimes: {', '.join(report.regimes)}"
    ]
    for e in report.entries:
        label = LABELS[e.status].ljust(11)
        what = f"{e.code} [{e.name}]" if e.code else f"{e.event} in {e.op}"
        detail = e.message
        if e.status == "confirmed":
            detail = f"{e.event} in {e.op} (regime {e.regime}): {e.message}"
        elif e.status == "unflagged":
            detail = f"(regime {e.regime}): {e.message}"
        lines.append(f"{label} {e.path}:{e.line}: {what} {detail}")
    counts = {s: sum(1 for e in report.entries if e.status == s) for s in LABELS}
    lines.append(
        f"{counts['confirmed']} confirmed, {counts['not_fired']} not fired, "
        f"{counts['not_reached']} not reached, {counts['unflagged']} unflagged."
    )
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)
