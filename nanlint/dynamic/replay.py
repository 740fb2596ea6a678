"""Replay one training step under the full monitor and say where its first
non-finite value came from; write and read the repro bundle of that step.

Used by ``nanlint.Guard`` (online, the moment a step goes non-finite) and by
``nanlint confirm --replay DIR`` (offline, from the bundle the guard wrote).

A bundle is a directory holding:

- ``state.pt``: the batch, the model (pickled by class reference, with its
  weights as they were before the failing step), the optimizer's class, its
  parameter groups (as indices into ``model.parameters()``) and state, the RNG
  states (CPU, CUDA when available, numpy and ``random``), the GradScaler
  state, and how to run the step (a Lightning ``training_step``, a Hugging
  Face model's ``loss``, or the user's module-level step function);
- ``report.json`` / ``report.txt``: what the replay found.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .monitor import Loc, Monitor, Recorder, is_finite

BUNDLE_VERSION = 1
_ORIGIN_KINDS = ("new-nan", "new-inf", "grad-nonfinite", "fill-overflow", "grad-overflow")
_LOW = (torch.float16, torch.bfloat16)


class ReplayError(Exception):
    """A bundle that cannot be read or replayed (exit code 2)."""


@dataclass
class Origin:
    """Where the first non-finite value of the step came from."""

    kind: str  # a monitor event kind, or "optimizer-state"
    op: str
    path: Optional[str]
    line: Optional[int]
    phase: str  # forward | backward | step | optimizer
    message: str
    code: Optional[str] = None  # the static finding at that line, if any
    finding: Optional[str] = None
    fix: Optional[str] = None


@dataclass
class GuardReport:
    step: int
    rank: int
    reason: str
    origin: Optional[Origin]
    bundle: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        head = f"nanlint guard: step {self.step}" + (f" (rank {self.rank})" if self.rank else "") + f": {self.reason}"
        lines = [head]
        o = self.origin
        if o is None:
            lines.append("origin: not found: the replayed step stayed finite (the failure depends on state the "
                         "replay does not restore, or on nondeterminism)")
        else:
            where = f"{o.path}:{o.line}" if o.path else "(no user line)"
            lines.append(f"origin: {where}: {o.kind} in {o.op} ({o.phase}): {o.message}")
            if o.code:
                lines.append(f"static: {o.code} at that line: {o.finding}")
            if o.fix:
                lines.append(f"fix: {o.fix}")
        if self.bundle:
            lines.append(f"repro bundle: {self.bundle} (replay it with `nanlint confirm --replay {self.bundle}`)")
        return "\n".join(lines)


# -- RNG ----------------------------------------------------------------------------


def rng_state() -> Dict[str, Any]:
    """Every RNG a training step may draw from (cheap: a few KB)."""
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    np = sys.modules.get("numpy")
    if np is not None:
        state["numpy"] = np.random.get_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


# -- replay -------------------------------------------------------------------------


def bare_module(model: Any) -> Any:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(model, "module", model) if _is_wrapper(model) else model


def bare_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a trainer's wrapper (accelerate's AcceleratedOptimizer)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def _is_wrapper(model: Any) -> bool:
    return type(model).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(model, "module")


def replay_step(model: Any, optimizer: Any, rng: Dict[str, Any], run: Callable[[], Any],
                project_files: Sequence[str] = ()) -> Optional[Origin]:
    """Run one step again (``run`` does forward and backward; the optimizer
    step is the caller's to disable) from ``rng``, under the monitor, and
    return the origin of its first non-finite value."""
    module = bare_module(model)
    stale = _optimizer_state_origin(module, bare_optimizer(optimizer), project_files)
    if stale is not None:
        return stale  # the weights were already non-finite: the previous step's optimizer made them so
    set_rng_state(rng)
    module.zero_grad(set_to_none=True)
    recorder = Recorder(regime="replay")
    monitor = Monitor(recorder)
    try:
        with monitor.active():
            run()
    except RuntimeError as exc:
        if not recorder.events:
            raise
    finally:
        module.zero_grad(set_to_none=True)
    return _origin_of(recorder)


def _origin_of(recorder: Recorder) -> Optional[Origin]:
    events = [e for e in recorder.events if e.kind in _ORIGIN_KINDS] or recorder.events
    if not events:
        return None
    first = events[0]
    # a -inf fill that made softmax NaN: the fill's line is the origin
    path, line = first.cause if first.cause is not None else (first.path, first.line)
    message = first.message
    if first.cause is not None and first.cause != (first.path, first.line):
        message += f" (at {os.path.basename(first.path)}:{first.line})"
    origin = Origin(first.kind, first.op, path, line, first.phase, message)
    _join_static(origin)
    return origin


def _optimizer_state_origin(module: Any, optimizer: Any, project_files: Sequence[str]) -> Optional[Origin]:
    """Parameters non-finite before the step's forward: an optimizer update
    made them so. Name the state that did (an eps that is 0 in the
    parameters' dtype, a second moment that underflowed to 0)."""
    params = [p for p in module.parameters()]
    with torch._C.DisableTorchFunction():
        bad = [p for p in params if not is_finite(p)]
    if not bad:
        return None
    names = {id(p): n for n, p in module.named_parameters()}
    detail = f"{len(bad)} parameter tensor(s) were already non-finite before this step (first: {names.get(id(bad[0]), '?')})"
    opt_name = type(optimizer).__name__ if optimizer is not None else "the optimizer"
    message = f"{detail}: the previous {opt_name} update made them so"
    for group in getattr(optimizer, "param_groups", ()):
        eps = group.get("eps")
        group_bad = [p for p in group["params"] if any(p is b for b in bad)]
        if not group_bad or not isinstance(eps, float):
            continue
        dtype = group_bad[0].dtype
        if dtype in _LOW and eps != 0 and torch.tensor(eps, dtype=dtype).item() == 0:
            zeros = 0
            for p in group_bad:
                second = optimizer.state.get(p, {}).get("exp_avg_sq")
                if isinstance(second, torch.Tensor):
                    zeros += int((second == 0).sum())
            message = (f"{detail}: optimizer state, not the model: {opt_name} eps={eps:g} is 0 in "
                       f"{str(dtype).replace('torch.', '')}, so where exp_avg_sq underflowed to 0 "
                       f"({zeros} element(s)) the update divides by 0")
            break
    origin = Origin("optimizer-state", f"{opt_name}.step", None, None, "optimizer", message)
    # the static finding on the optimizer's eps, in the user's files
    for path in project_files:
        for finding in _findings(path):
            text = _line_text(path, finding.line)
            if "eps" in finding.message and opt_name in text:
                origin.path, origin.line = path, finding.line
                _fill_finding(origin, finding)
                return origin
    if origin.fix is None:
        origin.fix = ("keep float32 master weights (torch.autocast + GradScaler) or use an eps that float16 "
                      "can hold (1e-4)")
    return origin


def _line_text(path: str, line: int) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().splitlines()[line - 1]
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


_FINDINGS_CACHE: Dict[str, list] = {}


def _findings(path: str) -> list:
    """The static findings of one file, with the settings of its project."""
    if path in _FINDINGS_CACHE:
        return _FINDINGS_CACHE[path]
    findings: list = []
    if os.path.isfile(path):
        from ..config import ConfigError, resolve_settings
        from ..runner import Selection, check_file

        try:
            settings = resolve_settings(None, Path(path))
            settings.min_confidence = "low"
            findings = [f for f in check_file(Path(path), Selection.build(settings)).findings if f.code != "NL000"]
        except ConfigError:
            findings = []
    _FINDINGS_CACHE[path] = findings
    return findings


def _fill_finding(origin: Origin, finding: Any) -> None:
    origin.code = finding.code
    origin.finding = finding.message
    # a finding without an automatic fix (a summed exp: use logsumexp) says what to do in its message
    origin.fix = finding.fix.message if finding.fix is not None else finding.message


def _join_static(origin: Origin) -> None:
    if origin.path is None or origin.line is None:
        return
    for finding in _findings(origin.path):
        if finding.line <= origin.line <= finding.end_line:
            _fill_finding(origin, finding)
            return


def user_files(extra: Sequence[Any] = ()) -> List[str]:
    """The user's source files on the current stack, and those defining
    ``extra`` objects (classes, functions): where the static findings are."""
    from .monitor import _SKIP_PREFIXES, _is_library

    files: List[str] = []

    def add(path: Optional[str]) -> None:
        if not path or path.startswith("<") or path.startswith(_SKIP_PREFIXES) or _is_library(path):
            return
        real = os.path.realpath(path)
        if real not in files and os.path.isfile(real):
            files.append(real)

    frame = sys._getframe(1)
    while frame is not None:
        add(frame.f_code.co_filename)
        frame = frame.f_back
    for obj in extra:
        code = getattr(obj, "__code__", None)
        if code is not None:
            add(code.co_filename)
            continue
        module = sys.modules.get(getattr(obj, "__module__", "") or "")
        add(getattr(module, "__file__", None))
    return files


# -- bundle --------------------------------------------------------------------------


def _optimizer_spec(module: Any, optimizer: Any) -> Optional[Dict[str, Any]]:
    if optimizer is None:
        return None
    optimizer = bare_optimizer(optimizer)
    index = {id(p): i for i, p in enumerate(module.parameters())}
    groups = []
    for group in optimizer.param_groups:
        groups.append({**{k: v for k, v in group.items() if k != "params"},
                       "params": [index[id(p)] for p in group["params"] if id(p) in index]})
    return {"class": (type(optimizer).__module__, type(optimizer).__qualname__), "groups": groups,
            "state_dict": optimizer.state_dict()}


def _main_file() -> Optional[str]:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.realpath(path) if path else None


def write_bundle(directory: str, report: GuardReport, *, kind: str, model: Any, optimizer: Any, batch: Any,
                 rng: Dict[str, Any], scaler: Any = None, step_fn: Any = None, batch_idx: int = 0,
                 bindings: Optional[Dict[str, str]] = None) -> None:
    """Write the state of a step before it is replayed (the weights are the
    pre-step ones). ``bindings`` name the globals of the step function's
    module that hold the model / optimizer / scaler (``{"model": "net"}``)."""
    os.makedirs(directory, exist_ok=True)
    module = bare_module(model)
    meta = {
        "version": BUNDLE_VERSION, "kind": kind, "step": report.step, "rank": report.rank,
        "reason": report.reason, "main_file": _main_file(),
        "sys_path": [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)],
        "step_fn": [step_fn.__module__, step_fn.__qualname__] if step_fn is not None else None,
        "bindings": bindings or {}, "batch_idx": batch_idx,
    }
    with open(os.path.join(directory, "bundle.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    payload = {"model": _without_hooks(module), "optimizer": _optimizer_spec(module, optimizer), "batch": batch, "rng": rng,
               "scaler": scaler.state_dict() if scaler is not None else None}
    torch.save(payload, os.path.join(directory, "state.pt"))


def _without_hooks(module: Any) -> Any:
    """A shallow copy of the top module without the hooks and the instance
    ``forward`` that trainers attach to it (a callback's bound method does
    not pickle, and none of them belongs to the model)."""
    clone = copy.copy(module)
    for name, value in list(vars(clone).items()):
        if name.startswith("_") and "hooks" in name and isinstance(value, dict):
            vars(clone)[name] = type(value)()
    vars(clone).pop("forward", None)
    return clone


def write_report(directory: str, report: GuardReport) -> None:
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report.to_dict(), fh, indent=2)
        fh.write("\n")
    with open(os.path.join(directory, "report.txt"), "w", encoding="utf-8") as fh:
        fh.write(report.render() + "\n")


# -- offline replay (`nanlint confirm --replay DIR`) ---------------------------------


def _read_meta(directory: str) -> Dict[str, Any]:
    path = os.path.join(directory, "bundle.json")
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(directory, "state.pt")):
        raise ReplayError(f"{directory}: not a repro bundle (expected bundle.json and state.pt)")
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{path}: unreadable: {exc}")
    if not isinstance(meta, dict) or meta.get("version") != BUNDLE_VERSION:
        raise ReplayError(f"{path}: not a bundle written by this version of nanlint's guard")
    return meta


# the script run as a program (`__mp_main__`: the same, in a process that multiprocessing spawned)
_MAIN_NAMES = ("__main__", "__mp_main__")


def _import_main(path: Optional[str]) -> Any:
    """The script that ran as ``__main__``, imported under another name so
    that its ``if __name__ == "__main__":`` block does not run."""
    name = "__nanlint_replayed_main__"
    if name in sys.modules:
        return sys.modules[name]
    if not path or not os.path.isfile(path):
        raise ReplayError(f"the bundle's code was defined in a script that ran as __main__ ({path}), "
                          f"which no longer exists")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _pickle_module(main_file: Optional[str]) -> Any:
    """``pickle`` with an Unpickler that finds ``__main__`` classes in the script."""
    import pickle
    import types

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module in _MAIN_NAMES:
                return getattr(_import_main(main_file), name)
            return super().find_class(module, name)

    shim = types.ModuleType("nanlint_bundle_pickle")
    shim.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
    shim.Unpickler = Unpickler
    return shim


def _rebuild_optimizer(model: Any, spec: Optional[Dict[str, Any]]) -> Any:
    if spec is None:
        return None
    module_name, qualname = spec["class"]
    cls: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    params = list(model.parameters())
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[i] for i in g["params"]]}
              for g in spec["groups"]]
    optimizer = cls(groups)
    optimizer.load_state_dict(spec["state_dict"])
    return optimizer


def _step_function(meta: Dict[str, Any]) -> Any:
    module_name, qualname = meta["step_fn"]
    module = (_import_main(meta["main_file"]) if module_name in _MAIN_NAMES
              else importlib.import_module(module_name))
    fn: Any = module
    for part in qualname.split("."):
        if part == "<locals>":
            raise ReplayError(f"the step function {qualname} is defined inside another function: "
                              f"define it at module level to replay the bundle offline")
        fn = getattr(fn, part)
    return module, fn


def run_callable(kind: str, model: Any, batch: Any, batch_idx: int = 0, step_fn: Any = None) -> Callable[[], Any]:
    """What replays one step's forward and backward, by integration."""
    def run() -> None:
        if kind == "loop":
            step_fn(batch)
            return
        batches = batch if kind == "hf" else [batch]
        for inputs in batches:
            if kind == "lightning":
                out = model.training_step(inputs, batch_idx)
            else:
                out = model(**inputs)
            loss = out["loss"] if isinstance(out, dict) or hasattr(out, "keys") else out
            if isinstance(loss, (tuple, list)):
                loss = loss[0]
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                loss.backward()

    return run


def replay_bundle(directory: str) -> GuardReport:
    """Load a bundle and replay its step: the report the guard wrote, again."""
    meta = _read_meta(directory)
    for path in reversed(meta.get("sys_path", [])):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        payload = torch.load(os.path.join(directory, "state.pt"), map_location="cpu", weights_only=False,
                             pickle_module=_pickle_module(meta.get("main_file")))
    except ReplayError:
        raise
    except Exception as exc:  # unreadable, or code that no longer imports
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ReplayError(f"{directory}: cannot load the bundle: {type(exc).__name__}: {first}")
    model = payload["model"]
    optimizer = _rebuild_optimizer(model, payload["optimizer"])
    kind = meta["kind"]
    step_fn = None
    extra: List[Any] = [type(m) for m in model.modules()]
    if kind == "loop":
        module, step_fn = _step_function(meta)
        objects = {"model": model, "optimizer": optimizer, "scaler": _rebuild_scaler(payload["scaler"])}
        for role, name in meta["bindings"].items():
            setattr(module, name, objects[role])
        extra.append(step_fn)
    if optimizer is not None:
        optimizer.step = lambda *args, **kwargs: None  # the step under test is the one that failed
    origin = replay_step(model, optimizer, payload["rng"],
                         run_callable(kind, model, payload["batch"], meta.get("batch_idx", 0), step_fn),
                         user_files(extra))
    return GuardReport(meta["step"], meta["rank"], meta["reason"], origin, bundle=directory)


def _rebuild_scaler(state: Optional[Dict[str, Any]]) -> Any:
    if state is None:
        return None
    scaler = torch.amp.GradScaler("cpu")
    scaler.load_state_dict(state)
    return scaler
