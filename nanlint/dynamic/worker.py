"""The process `nanlint confirm` runs a target in: ``python -m nanlint.dynamic.worker REQUEST RESULT``.

The target's code runs here, never in the ``nanlint confirm`` process itself,
so that nothing it does can stop confirm from reporting truthfully: its
``sys.exit``/``os._exit`` ends only this process (the parent sees no result
and says so), its prints go to stderr (this process's stdout is the parent's
stderr; the report travels through the RESULT file), its non-daemon threads
die with ``os._exit`` once the result is written, and ``--timeout`` is the
parent killing this process, which no ``except BaseException``, ignored
signal or reset timer in the target can prevent.

REQUEST is a pickle of ``run``'s keyword arguments written by the parent;
RESULT receives ``{"code": int, "stdout": str, "error": str | None}``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..finding import Finding
from ..runner import Selection, check_file
from .target import describe


class Failed(Exception):
    """The run cannot be reported on: exit 2 with this one-line message."""


TORCH_HINT = ("`nanlint confirm` needs torch: pip install -e '.[dynamic]' in a nanlint checkout, or "
              "pip install 'nanlint[dynamic] @ git+https://github.com/nanlint/nanlint'")


def run(target_spec: str, selection: Selection, *, device: str, dtype: str, precision: str, steps: Optional[int],
        seed: int, push_steps: int, regimes: Optional[str], output_format: str,
        verbose: bool) -> Tuple[int, str, Optional[str]]:
    """(exit code, report for stdout, one-line error); raises ``Failed`` when
    there is no report to give."""
    try:
        import torch
    except ImportError:
        raise Failed(TORCH_HINT) from None

    from . import confirm as dyn
    from .target import TargetError, load_target

    torch.manual_seed(seed)  # the factory's own random init is part of the run
    try:
        target = load_target(target_spec)
    except TargetError as exc:
        raise Failed(describe(exc).partition(": ")[2]) from exc
    where = target_spec.rpartition(":")[0]
    factory_file = where if where.endswith(".py") else None
    def lint(path: str) -> Tuple[str, List[Finding]]:
        result = check_file(Path(path), selection)
        return result.path, [f for f in result.findings if f.code != "NL000"]

    findings: List[Finding] = []
    abspaths: Dict[str, str] = {}
    for path in dyn.source_files(target, factory_file):
        shown, found = lint(path)
        abspaths[shown] = os.path.realpath(path)
        findings.extend(found)
    findings.sort(key=lambda f: f.sort_key())

    tty = sys.stderr.isatty() and not os.environ.get("CI")
    progress = (lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True)) if tty else None
    options = dyn.Options(device=device, dtype=dtype, precision=precision, steps=steps, seed=seed,
                          push_steps=push_steps, progress=progress, regimes=regimes)
    try:
        report = dyn.run(target, options, findings, abspaths, lint)
    except dyn.ConfirmError as exc:
        raise Failed(describe(exc).partition(": ")[2]) from exc
    except MemoryError as exc:
        raise Failed("the model ran out of memory") from exc
    except RuntimeError as exc:
        text = describe(exc).partition(": ")[2] or type(exc).__name__
        if "out of memory" in text.lower():
            raise Failed(f"the device ran out of memory: {text}") from exc
        if dyn.dtype_caused(text):
            raise Failed(f"an op is not implemented for {dtype} on this device: {text}") from exc
        raise Failed(f"the model raised RuntimeError: {text}") from exc
    except Exception as exc:  # the user's model code failed
        raise Failed(f"the model raised {describe(exc)}") from exc

    if output_format == "json":
        text = json.dumps(report.to_dict(), indent=2)
    else:
        text = dyn.render_text(report)
    if any(e.status in (dyn.CONFIRMED, dyn.UNFLAGGED) for e in report.entries):
        return 1, text, None
    errors = [e for e in report.entries if e.status == dyn.ERROR]
    if errors:
        # nothing fired, but not everything ran: no "all clear"
        first = errors[0]
        return 2, text, (f"the run raised {len(errors)} exception{'s' if len(errors) != 1 else ''} "
                         f"(first: {first.path}:{first.line}: {first.message}); see the report")
    return 0, text, None


def _leave_with_parent(parent: int) -> None:
    """End this process when the ``nanlint confirm`` that started it is gone
    (killed with -9): a target is never left running on its own."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="nanlint-parent-watch", daemon=True).start()


def main(argv: List[str]) -> None:
    request_path, result_path = argv[1], argv[2]
    with open(request_path, "rb") as handle:
        request: Dict[str, Any] = pickle.load(handle)
    _leave_with_parent(request.pop("parent"))
    verbose = request["verbose"]
    code, out, error = 2, "", None
    # torch's own warnings (e.g. "Failed to initialize NumPy" from a wheel
    # without numpy) and the target's are not confirm's output: --verbose shows them
    with warnings.catch_warnings(record=True) as caught:
        failure: Optional[BaseException] = None
        try:
            code, out, error = run(**request)
        except BaseException as exc:  # whatever the target raises is reported, never a traceback
            failure = exc
            if isinstance(exc, Failed):
                error = str(exc)
            elif isinstance(exc, SystemExit):
                error = (f"the target called sys.exit({exc.code!r}) before confirm finished: "
                         f"nothing can be concluded from a run that did not complete")
            else:
                error = f"the target raised {describe(exc)} before confirm finished"
        if failure is not None and verbose:
            traceback.print_exception(type(failure), failure, failure.__traceback__)
    if verbose:
        for w in caught:
            print(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line), end="",
                  file=sys.stderr)
    if error is not None:
        code = 2
    tmp = result_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"code": code, "stdout": out, "error": error}, handle)
    os.replace(tmp, result_path)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # the report is written: threads the target left running must not keep this process alive
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
