"""`nanlint confirm`: run the user's model in low precision under the monitor,
through several input regimes, and join what fired with the static findings."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from ..finding import Finding
from .monitor import (_LOW, _TORCH_DIR, Event, Loc, ModuleScope, Monitor, Recorder, _is_library, _rounds_to_zero,
                      is_finite, module_sites, raise_site, user_location)
from .target import Target, describe

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

CONFIRMED = "confirmed"
NOT_FIRED = "not_fired"
NOT_REACHED = "not_reached"
UNFLAGGED = "unflagged"
ERROR = "error"
STATUSES = (CONFIRMED, NOT_FIRED, NOT_REACHED, UNFLAGGED, ERROR)

REGIMES = ("example", "eval", "zeros", "near-zero", "scaled-x10", "scaled-x100", "scaled-x1000", "identical-pair",
           "masked-row", "masked-row-inverse", "train", "grad-push")
# losses whose targets an input regime can make invalid (a VAE's input is its BCE target)
_LOSSES = frozenset({"binary_cross_entropy", "cross_entropy", "nll_loss", "kl_div", "poisson_nll_loss",
                     "multilabel_soft_margin_loss", "multi_margin_loss", "ctc_loss"})


class ConfirmError(Exception):
    """A problem with the run itself (exit code 2)."""


def dtype_caused(text: str) -> bool:
    """An exception an op raises because of the low-precision dtype."""
    if "not implemented for" in text or "without overflow" in text:
        return True
    lowered = text.lower()
    return "not supported" in lowered and any(w in text for w in ("Half", "BFloat16", "dtype"))


def chosen_regimes(spec: Optional[str]) -> List[str]:
    """``--regimes``: ``a,b`` runs only those, ``-a,-b`` all but those."""
    if not spec:
        return list(REGIMES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    skip = [n.startswith("-") for n in names]
    if any(skip) and not all(skip):
        raise ConfirmError(f"--regimes {spec!r}: either name the regimes to run or (with -) the ones to skip")
    bare = [n.lstrip("-") for n in names]
    unknown = [n for n in bare if n not in REGIMES]
    if unknown or not bare:
        raise ConfirmError(f"--regimes: unknown regime {(unknown or [spec])[0]!r} (known: {', '.join(REGIMES)})")
    return [r for r in REGIMES if (r in bare) != all(skip)]


@dataclass
class Options:
    device: str = "auto"
    dtype: str = "float16"
    precision: str = "half"  # half | autocast
    steps: Optional[int] = None
    seed: int = 0
    push_steps: int = 20
    progress: Optional[Callable[[str], None]] = None
    regimes: Optional[str] = None  # "a,b" runs only those, "-a,-b" skips those


@dataclass
class Entry:
    """One line of the report (and one JSON object)."""

    status: str
    code: Optional[str]
    path: str
    line: int
    regime: Optional[str]
    event: Optional[str]
    op: Optional[str]
    device: str
    dtype: str
    message: str
    name: Optional[str] = None
    reached: int = 0
    #: every regime in which this line fired, in the order they ran (``regime`` is
    #: the one whose event is shown)
    fired_in: List[str] = field(default_factory=list)
    #: the float32 reference run of the same regime: True when the same line
    #: went non-finite there too (broken in any precision), False when it stayed
    #: finite (the low precision broke it), None when not compared
    float32: Optional[bool] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "status": self.status, "code": self.code, "path": self.path, "line": self.line,
            "regime": self.regime, "regimes": list(self.fired_in), "event": self.event, "op": self.op,
            "device": self.device, "dtype": self.dtype, "message": self.message, "float32": self.float32,
        }

    def regime_text(self) -> str:
        """``regime scaled-x10`` or ``regime scaled-x10; also fired in scaled-x100, train``."""
        others = [r for r in self.fired_in if r != self.regime]
        text = f"regime {self.regime}" + (f"; also fired in {', '.join(others)}" if others else "")
        if self.float32 is not None:
            text += "; float32 " + ("too: not a low-precision hazard" if self.float32 else "stays finite")
        return text


@dataclass
class Report:
    device: str
    dtype: str
    precision: str  # half | autocast (--precision)
    regimes: List[str]  # the regimes that ran, in order
    entries: List[Entry] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def summary(self) -> Dict[str, int]:
        """How many entries of each status (the text report's count line)."""
        return {s: sum(1 for e in self.entries if e.status == s) for s in STATUSES}

    def to_dict(self) -> Dict[str, Any]:
        """``--output-format json``: what the text report shows, as one object."""
        return {
            "device": self.device, "dtype": self.dtype, "precision": self.precision,
            "regimes": list(self.regimes), "entries": [e.to_dict() for e in self.entries],
            "notes": list(self.notes), "summary": self.summary(),
        }


# -- device and dtype -----------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_ok:
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfirmError("--device cuda: no CUDA device is available")
    if name == "mps" and not mps_ok:
        raise ConfirmError("--device mps: no MPS device is available")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfirmError(f"unknown device {name!r} (expected auto, cpu, cuda or mps)")
    return torch.device(name)


def _map_tensors(value: Any, fn: Callable[[torch.Tensor, Optional[str]], torch.Tensor], key: Optional[str] = None) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value, key)
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, fn, key) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, fn, key) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn, str(k)) for k, v in value.items()}
    return value


def _floating_leaves(value: Any) -> List[torch.Tensor]:
    out: List[torch.Tensor] = []
    _map_tensors(value, lambda t, k: (out.append(t) if t.is_floating_point() else None) or t)
    return out


def prepare_inputs(inputs: Any, device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """Move to the device; cast floating tensors (token ids and masks stay as they are)."""
    def cast(t: torch.Tensor, _key: Optional[str]) -> torch.Tensor:
        t = t.detach().to(device)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t

    return _map_tensors(inputs, cast)


def call_model(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def surrogate_loss(output: Any) -> Optional[torch.Tensor]:
    """A float32 mean over every floating output that carries a gradient."""
    parts = [t.float().mean() for t in _floating_leaves(output) if t.requires_grad]
    if not parts:
        return None
    return torch.stack(parts).sum()


# -- regimes ----------------------------------------------------------------------


#: the value regimes: what each does to a floating tensor
VALUES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zeros": torch.zeros_like,
    "near-zero": lambda t: (t.float() * 1e-4).to(t.dtype),
    **{f"scaled-x{f}": (lambda t, f=f: (t.float() * f).to(t.dtype)) for f in (10, 100, 1000)},
}
_EMBEDDINGS = (torch.nn.Embedding, torch.nn.EmbeddingBag)
# on token ids only the scaled regimes apply (to the embeddings' outputs):
# embeddings that grow during training are what they stand for, while no
# token gives a zero or near-zero embedding
_ON_EMBEDDINGS = ("scaled-x10", "scaled-x100", "scaled-x1000")


def _identical_pair(inputs: Any) -> Any:
    """The inputs with every floating tensor that has the shape and dtype of
    an earlier one replaced by a copy of it (a siamese pair, anchor and
    positive: the same image twice), or None when no two match. Distances
    are then exactly 0 and cosines exactly 1, where sqrt, norm and acos
    have infinite derivatives."""
    first: Dict[Tuple[Any, torch.dtype], torch.Tensor] = {}
    changed = []

    def fn(t: torch.Tensor, key: Optional[str]) -> torch.Tensor:
        if not t.is_floating_point() or t.numel() == 0:
            return t
        seen = first.setdefault((tuple(t.shape), t.dtype), t)
        if seen is t:
            return t
        changed.append(key)
        return seen.clone()

    out = _map_tensors(inputs, fn)
    return out if changed else None


def input_regimes(inputs: Any, generator: torch.Generator, embeddings: bool = False) -> List[Tuple[str, Any]]:
    """(name, inputs) for every regime that applies to these inputs. With
    ``embeddings`` (token ids only, a model with embedding layers) the scaled
    regimes are listed with the inputs unchanged: ``Runner`` applies them to
    the embeddings' outputs."""
    regimes: List[Tuple[str, Any]] = [("example", inputs)]
    floats = _floating_leaves(inputs)
    for name, fn in VALUES.items():
        if floats:
            regimes.append((name, _map_tensors(inputs, lambda t, k, fn=fn: fn(t) if t.is_floating_point() else t)))
        elif embeddings and name in _ON_EMBEDDINGS:
            regimes.append((name, inputs))
    pair = _identical_pair(inputs)
    if pair is not None:
        regimes.append(("identical-pair", pair))

    def fully_masked(value: bool):
        def fn(t: torch.Tensor, key: Optional[str]) -> torch.Tensor:
            is_mask = t.dtype == torch.bool or (
                key is not None and "mask" in key.lower() and not t.is_floating_point() and t.dim() >= 1
            )
            if not is_mask or t.dim() == 0:
                return t
            t = t.clone()
            if t.dtype == torch.bool:
                t[0] = value
            else:
                t[0] = 1 if value else 0
            return t
        return fn

    has_mask = []
    _map_tensors(inputs, lambda t, k: (has_mask.append(1) if (t.dtype == torch.bool or (k and "mask" in k.lower())) else None) or t)
    if has_mask:
        # a row masked everywhere, in both conventions (True = masked out, 0 = masked out)
        regimes.append(("masked-row", _map_tensors(inputs, fully_masked(True))))
        regimes.append(("masked-row-inverse", _map_tensors(inputs, fully_masked(False))))
    return regimes


# -- running ------------------------------------------------------------------------


class Runner:
    def __init__(self, target: Target, options: Options) -> None:
        self.target = target
        self.options = options
        self.device = resolve_device(options.device)
        if options.dtype not in DTYPES:
            raise ConfirmError(f"unknown dtype {options.dtype!r} (expected float16, bfloat16 or float32)")
        if options.precision not in ("half", "autocast"):
            raise ConfirmError(f"unknown precision {options.precision!r} (expected half or autocast)")
        self.dtype = DTYPES[options.dtype]
        self.recorder = Recorder()
        # uninitialised memory is NaN while the model runs (as while it was
        # built, see target.load_target): a parameter never initialised shows
        self.monitor = Monitor(self.recorder, fill_uninitialized=True)
        model = target.model
        allocations = getattr(target, "_allocations", None)
        #: a float32 copy for the reference run, made before the cast
        self.reference_model: Any = None
        self.reference_note: Optional[str] = None
        self._sites: Dict[int, Loc] = {}
        self.trains = isinstance(model, torch.nn.Module) and model.training
        self.diverged = False  # an optimizer step made the weights non-finite
        if isinstance(model, torch.nn.Module):
            self.monitor.adopt_parameters(model, allocations)
            self._sites = module_sites(model, getattr(allocations, "built_at", None))
            if self._sites:
                self.monitor.scope = ModuleScope(model, self._sites)
            if self.dtype != torch.float32:
                try:
                    self.reference_model = copy.deepcopy(model)
                except Exception as exc:  # a model that cannot be copied: no reference
                    self.reference_note = f"no float32 reference run: the model cannot be copied ({describe(exc)})"
            model = model.to(self.device)
            if options.precision == "half":
                model = model.to(self.dtype)
        self.model = model
        input_dtype = self.dtype if options.precision == "half" else None
        self.inputs = prepare_inputs(target.inputs, self.device, input_dtype)
        #: token ids only: the value regimes scale what the embedding layers return
        self.embeddings = 0
        if isinstance(model, torch.nn.Module) and not _floating_leaves(self.inputs):
            self.embeddings = sum(isinstance(m, _EMBEDDINGS) for m in model.modules())

    # -- helpers -----------------------------------------------------------
    def _autocast(self):
        if self.options.precision == "autocast" and self.dtype != torch.float32:
            return torch.autocast(device_type=self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def _progress(self, message: str) -> None:
        if self.options.progress is not None:
            self.options.progress(message)

    def _loss(self, output: Any, inputs: Any) -> Optional[torch.Tensor]:
        if self.target.loss_fn is not None:
            return self.target.loss_fn(output, inputs)
        return surrogate_loss(output)

    @contextlib.contextmanager
    def _on_embeddings(self, regime: str, model: Any) -> Iterator[None]:
        """A value regime on a token-id model: applied to what its embedding
        layers return (out of the monitor's sight: the regime is not the
        user's code)."""
        fn = VALUES.get(regime) if self.embeddings and regime in _ON_EMBEDDINGS else None
        if fn is None:
            yield
            return

        def hook(module: Any, args: Any, output: Any) -> Any:
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                with torch._C.DisableTorchFunction():
                    return fn(output)
            return None

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _EMBEDDINGS)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward_backward(self, regime: str, inputs: Any, model: Any = None, monitor: Optional[Monitor] = None,
                         autocast: bool = True) -> None:
        """One input regime: forward, loss, backward (``eval``: see
        :meth:`evaluate`), on the run's model and monitor unless given others
        (the float32 reference)."""
        model = self.model if model is None else model
        monitor = self.monitor if monitor is None else monitor
        monitor.recorder.regime = regime
        if regime == "eval":
            self.evaluate(inputs, model, monitor, autocast)
            return
        if isinstance(model, torch.nn.Module):
            model.zero_grad(set_to_none=True)
        with monitor.active(), self._on_embeddings(regime, model):
            with self._autocast() if autocast else contextlib.nullcontext():
                output = call_model(model, inputs)
                loss = self._loss(output, inputs)
            if loss is not None and loss.requires_grad:
                loss.backward()

    def evaluate(self, inputs: Any, model: Any = None, monitor: Optional[Monitor] = None,
                 autocast: bool = True) -> None:
        """The ``eval`` regime: the example inputs through ``model.eval()``
        under ``no_grad``, as in validation or inference (dropout off, norms on
        their running statistics, the model's own inference-only paths)."""
        model = self.model if model is None else model
        monitor = self.monitor if monitor is None else monitor
        modes = [(m, m.training) for m in model.modules()]  # a submodule the user froze in eval stays so
        model.eval()
        try:
            with torch.no_grad(), monitor.active(), (self._autocast() if autocast else contextlib.nullcontext()):
                call_model(model, inputs)
        finally:
            for module, training in modes:
                module.training = training

    def reference(self, wanted: Sequence[str]) -> Optional[Recorder]:
        """Run the regimes in ``wanted`` again on a float32 copy of the model,
        without autocast: what goes non-finite there too is broken in any
        precision (a deliberate ``log(0)``, a fully masked softmax row), not
        by the low precision."""
        if self.reference_model is None or not wanted:
            return None
        try:
            return self._reference(wanted)
        except Exception as exc:  # out of memory for a second model: the report stands without it
            if not _fatal(exc):
                raise
            self.reference_note = f"no float32 reference run: {describe(exc)}"
            return None

    def _reference(self, wanted: Sequence[str]) -> Recorder:
        recorder = Recorder()
        monitor = Monitor(recorder, fill_uninitialized=True)
        model = self.reference_model.to(self.device)
        if self._sites:
            originals = list(self.target.model.modules())
            copies = list(model.modules())
            sites = {id(c): self._sites[id(o)] for o, c in zip(originals, copies) if id(o) in self._sites}
            monitor.scope = ModuleScope(model, sites)
        inputs = prepare_inputs(self.target.inputs, self.device, torch.float32)
        runs = dict(input_regimes(inputs, torch.Generator().manual_seed(self.options.seed), bool(self.embeddings)))
        runs["eval"] = inputs
        for name in wanted:
            if name not in runs:
                continue
            self._progress(f"float32 reference: regime {name}")
            try:
                self.forward_backward(name, runs[name], model, monitor, autocast=False)
            except Exception as exc:  # what float32 refuses proves nothing either way
                if _fatal(exc):
                    raise
        return recorder

    def train(self, steps: int) -> None:
        if not isinstance(self.model, torch.nn.Module):
            return
        self.recorder.regime = "train"
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer, made_at = _make_optimizer(self.target.optimizer, params)
        if optimizer is not None:
            self._watch_step(optimizer, params, made_at)
        with self.monitor.active():
            for step in range(steps):
                if self.diverged:
                    # what runs on non-finite weights only propagates the
                    # step's event: the steps after it prove nothing more
                    return
                self._progress(f"train step {step + 1}/{steps}")
                if self.target.train_step is not None:
                    with self._autocast():
                        self.target.train_step(self.model, self.inputs, optimizer)
                    continue
                if optimizer is not None:
                    optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    output = call_model(self.model, self.inputs)
                    loss = self._loss(output, self.inputs)
                if loss is None or not loss.requires_grad:
                    return
                loss.backward()
                if optimizer is not None:
                    optimizer.step()

    def _watch_step(self, optimizer: Any, params: Sequence[torch.Tensor], made_at: Optional[Loc]) -> None:
        original = optimizer.step
        monitor = self.monitor
        # nanlint's own loop (no train_step) has no user line: name the line
        # that made the optimizer (and set its eps) instead
        fallback = made_at

        def step(*args: Any, **kwargs: Any) -> Any:
            loc = user_location() or fallback
            if loc is not None:
                monitor.recorder.reached[loc] += 1  # a Python call the torch-function mode does not see
            with torch._C.DisableTorchFunction():
                diverged = any(not is_finite(p) for p in params)
            if not diverged:  # NaN weights give NaN gradients: that is propagation, not a new cause
                monitor.check_step(params, loc)
            result = original(*args, **kwargs)
            with torch._C.DisableTorchFunction():
                bad = [p for p in params if not is_finite(p)]
                grads_finite = all(p.grad is None or is_finite(p.grad) for p in params)
            if bad and not diverged:
                self.diverged = True
                eps = _vanishing_eps(optimizer)
                if grads_finite and eps is not None:
                    # the optimizer's state, not the gradients' size: reported
                    # where the optimizer (and its eps) is made
                    value, dtype = eps
                    monitor.emit("optimizer-state", fallback or loc, "step",
                                 f"{type(optimizer).__name__}'s eps {value:g} is 0 in {dtype}: where exp_avg_sq "
                                 f"underflows to 0 the update is 0/0, and {len(bad)} parameter tensor(s) became "
                                 f"non-finite from finite gradients (optimizer state, not gradient size: clipping "
                                 f"does not help); use eps >= 1e-4 or float32 master weights", phase="step")
                else:
                    monitor.emit("new-nan", loc, "step",
                                 f"{len(bad)} parameter tensor(s) became non-finite in this optimizer step")
            return result

        optimizer.step = step

    # -- gradient push ------------------------------------------------------
    def push(self, findings: Sequence[Finding], abspaths: Dict[str, str]) -> None:
        """GRIST-style: a few signed-gradient steps on the floating inputs that
        drive each reached, unconfirmed finding's op toward its danger zone."""
        if not self.can_push():
            return
        for finding in findings:
            path = abspaths.get(finding.path)
            if path is None or self._confirmed(path, finding):
                continue
            if not any(self.recorder.reached.get((path, l)) for l in range(finding.line, finding.end_line + 1)):
                continue
            self._progress(f"gradient push on {finding.code} line {finding.line}")
            self._push_one(path, finding)

    def can_push(self) -> bool:
        """The push moves floating inputs: token ids and an empty batch have none."""
        return self.options.push_steps > 0 and any(t.numel() for t in _floating_leaves(self.inputs))

    def _confirmed(self, path: str, finding: Finding) -> bool:
        return bool(self.recorder.events_at(path, finding.line, finding.end_line))

    def _push_one(self, path: str, finding: Finding) -> None:
        lines = set(range(finding.line, finding.end_line + 1))
        inputs = _map_tensors(self.inputs, lambda t, k: t.detach().clone())
        leaves = _floating_leaves(inputs)
        for step in range(1, self.options.push_steps + 1):
            for leaf in leaves:
                leaf.requires_grad_(True)
                leaf.grad = None
            captured: List[Tuple[str, torch.Tensor]] = []
            capture = _Capture(path, lines, captured)
            self.recorder.regime = "grad-push"
            self.recorder.push_step = step  # type: ignore[attr-defined]
            before = len(self.recorder.events)
            try:
                with self.monitor.active(), capture, self._autocast():
                    output = call_model(self.model, inputs)
            except Exception:  # pushed inputs the model refuses: nothing more to learn here
                return
            fired = [e for e in self.recorder.events[before:] if e.path == path and e.line in lines]
            if fired:
                for event in fired:
                    event.message += f" (after {step} gradient-push step{'s' if step != 1 else ''})"
                return
            objective = _objective(captured)
            if objective is None or not objective.requires_grad:
                return
            objective.backward()
            with torch.no_grad():
                for leaf in leaves:
                    if leaf.grad is None:
                        continue
                    scale = leaf.detach().float().abs().mean().item() + 1e-2
                    leaf.add_((leaf.grad.sign() * 0.5 * scale).to(leaf.dtype))
            del output


#: events a float32 reference run can repeat: values that went non-finite
_COMPARED = ("new-nan", "new-inf", "grad-nonfinite")


def compare_reference(events: Sequence[Event], reference: Recorder, ran: Sequence[str]) -> None:
    """Set ``Event.float32`` on the events of the regimes the reference ran."""
    fired = {(e.path, e.line, e.regime) for e in reference.events if e.kind in _COMPARED}
    for e in events:
        if e.kind in _COMPARED and e.regime in ran:
            e.float32 = (e.path, e.line, e.regime) in fired
    # an underflow is compared through what its zeros did
    for e in events:
        if e.kind == "underflow" and e.regime in ran:
            made = [s.float32 for s in events if s.cause == (e.path, e.line) and s.regime == e.regime
                    and s.float32 is not None]
            if made:
                e.float32 = any(made)


def _vanishing_eps(optimizer: Any) -> Optional[Tuple[float, str]]:
    """(eps, dtype) of a parameter group whose float ``eps`` rounds to 0 in
    its parameters' low-precision dtype (Adam's 1e-8 in float16)."""
    for group in getattr(optimizer, "param_groups", ()):
        eps = group.get("eps")
        if not isinstance(eps, float):
            continue
        for p in group.get("params", ()):
            if p.dtype in _LOW and _rounds_to_zero(eps, p.dtype):
                return eps, _LOW[p.dtype]
    return None


def _definition(fn: Any) -> Optional[Loc]:
    code = getattr(fn, "__code__", None)
    if code is None or code.co_filename.startswith("<"):
        return None
    return os.path.realpath(code.co_filename), code.co_firstlineno


def _make_optimizer(factory: Optional[Callable[..., Any]], params: List[torch.Tensor]) -> Tuple[Any, Optional[Loc]]:
    """The target's optimizer and the line that constructed it (where its eps
    is given, and where NL001 reports it): the factory's line that called a
    ``torch.optim.Optimizer``'s ``__init__``, else the factory's first line."""
    if factory is None:
        return None, None
    sites: List[Loc] = []
    original = torch.optim.Optimizer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not sites:
            loc = user_location()  # the first frame outside torch (Adam.__init__) and nanlint
            if loc is not None:
                sites.append(loc)
        original(self, *args, **kwargs)

    torch.optim.Optimizer.__init__ = __init__  # type: ignore[method-assign]
    try:
        optimizer = factory(params)
    finally:
        torch.optim.Optimizer.__init__ = original  # type: ignore[method-assign]
    return optimizer, sites[0] if sites else _definition(factory)


class _Capture(torch.overrides.TorchFunctionMode):
    """Keeps the operand that decides each hazard at the given lines."""

    OPERAND = {
        "exp": ("max", 0), "exp_": ("max", 0), "expm1": ("max", 0), "exp2": ("max", 0),
        "div": ("min_abs", 1), "__truediv__": ("min_abs", 1), "true_divide": ("min_abs", 1),
        "__rtruediv__": ("min_abs", 0), "reciprocal": ("min_abs", 0), "rsqrt": ("min_abs", 0),
        "sqrt": ("min_abs", 0), "log": ("min_abs", 0), "log2": ("min_abs", 0), "log10": ("min_abs", 0),
        "normalize": ("min_norm", 0), "acos": ("max_abs", 0), "asin": ("max_abs", 0),
        "atanh": ("max_abs", 0), "tanh": ("min", 0),
    }

    def __init__(self, path: str, lines: set, out: List[Tuple[str, torch.Tensor]]) -> None:
        super().__init__()
        self.path, self.lines, self.out = path, lines, out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        spec = self.OPERAND.get(name)
        if spec is not None:
            loc = user_location()
            if loc is not None and loc[0] == self.path and loc[1] in self.lines:
                kind, index = spec
                if index < len(args) and isinstance(args[index], torch.Tensor):
                    self.out.append((kind, args[index]))
        return func(*args, **kwargs)


def _objective(captured: Sequence[Tuple[str, torch.Tensor]]) -> Optional[torch.Tensor]:
    """A scalar whose increase moves the captured operands toward danger."""
    terms = []
    for kind, t in captured:
        if not t.requires_grad or t.numel() == 0:
            continue
        t = t.float()
        if kind == "max":
            terms.append(t.max())
        elif kind == "min_abs":
            terms.append(-t.abs().min())
        elif kind == "min_norm":
            terms.append(-t.flatten(1).norm(dim=-1).min() if t.dim() > 1 else -t.norm())
        elif kind == "max_abs":
            terms.append(t.abs().max())
        elif kind == "min":
            terms.append(-t.min())
    if not terms:
        return None
    return torch.stack(terms).sum()


# -- joining ---------------------------------------------------------------------------


def source_files(target: Target, factory_file: Optional[str]) -> List[str]:
    """The files the model's classes (and the target's callables) are defined in."""
    files: List[str] = []

    def add(obj: Any) -> None:
        try:
            path = inspect.getsourcefile(obj)
        except (TypeError, OSError):
            return
        if path and os.path.isfile(path):
            real = os.path.realpath(path)
            torch_dir = os.path.dirname(torch.__file__)
            if not real.startswith(torch_dir + os.sep) and real not in files:
                files.append(real)

    if factory_file:
        add_path = os.path.realpath(factory_file)
        if os.path.isfile(add_path):
            files.append(add_path)
    model = target.model
    if isinstance(model, torch.nn.Module):
        for module in model.modules():
            add(type(module))
    else:
        add(model)
    for fn in (target.loss_fn, target.train_step):
        if fn is not None:
            add(fn)
    return files


# rules that only some events confirm: NaN weights from Adam's eps in half are
# not a missing gradient clip
_CONFIRMS = {"NL004": ("grad-nonfinite", "grad-overflow")}
_NONFINITE_KINDS = ("new-nan", "new-inf", "grad-nonfinite", "grad-overflow", "fill-overflow")


def join(findings: Sequence[Finding], abspaths: Dict[str, str], recorder: Recorder,
         device: str, dtype: str) -> List[Entry]:
    entries: List[Entry] = []
    explained: set = set()
    uses = _eps_uses(findings, abspaths, recorder)
    for finding in findings:
        path = abspaths.get(finding.path, finding.path)
        lines = set(range(finding.line, finding.end_line + 1)) | uses.get(id(finding), set())
        # an exception confirms a finding only when the dtype caused it (a
        # Half-overflowing fill, an op not implemented for Half)
        events = [e for e in recorder.events if e.path == path and e.line in lines
                  and (e.kind != "error" or dtype_caused(e.message)) and e.kind in _CONFIRMS.get(finding.code, (e.kind,))]
        reached = sum(recorder.reached.get((path, l), 0) for l in lines)
        # what this line's non-finite values caused elsewhere (the NaN a -inf
        # fill makes in softmax) is the same hazard, not an unflagged one
        for e in recorder.events:
            if e.cause is not None and e.cause[0] == path and finding.line <= e.cause[1] <= finding.end_line:
                explained.add((e.path, e.line))
        if events:
            # the strongest evidence: a value that actually went non-finite
            # beats a guard that merely rounds away or a gate that closed
            first = next((e for e in events if e.kind in _NONFINITE_KINDS), events[0])
            for e in events:
                explained.add((e.path, e.line))
            entries.append(Entry(CONFIRMED, finding.code, finding.path, finding.line, first.regime, first.kind,
                                 first.op, device, dtype, first.message, finding.name, reached,
                                 _regimes_of(events), first.float32))
        elif reached:
            entries.append(Entry(NOT_FIRED, finding.code, finding.path, finding.line, None, None, None, device, dtype,
                                 f"reached {reached} time{'s' if reached != 1 else ''}, never fired",
                                 finding.name, reached))
        else:
            entries.append(Entry(NOT_REACHED, finding.code, finding.path, finding.line, None, None, None, device,
                                 dtype, "never reached", finding.name, 0))
    seen: set = set()
    display = {v: k for k, v in abspaths.items()}
    # the same exception in several regimes is one entry naming them all
    raised: Dict[Tuple[str, int, str], List[str]] = {}
    for event in recorder.events:
        if event.kind == "error":
            raised.setdefault((event.path, event.line, event.message), []).append(event.regime or "?")
    underflows = {(e.path, e.line) for e in recorder.events if e.kind == "underflow"}
    for event in recorder.events:
        if (event.path, event.line) in explained:
            continue
        if event.kind != "underflow" and event.cause in underflows:
            continue  # the underflow's entry, where it began, names this line
        key = (event.path, event.line, event.message if event.kind == "error" else event.kind)
        if key in seen:
            continue
        seen.add(key)
        path = display.get(event.path) or _display(event.path)
        if _regime_artefact(event):
            continue  # a note (see run), not a low-precision hazard
        if event.kind == "error":
            if dtype_caused(event.message) and any(e.kind != "error" and (e.path, e.line) == key[:2]
                                                   for e in recorder.events):
                continue  # the fill-overflow event at this line says it already
            regimes = raised[key]
            where = f"regime{'s' if len(regimes) > 1 else ''} {', '.join(regimes)}"
            entries.append(Entry(ERROR, None, path, event.line, event.regime, event.kind, event.op, device, dtype,
                                 f"{'' if event.message.partition(':')[0] == event.op else event.op + ' '}raised "
                                 f"{event.message} ({where})", fired_in=list(dict.fromkeys(regimes))))
            continue
        same = [e for e in recorder.events if (e.path, e.line, e.kind) == (event.path, event.line, event.kind)]
        entries.append(Entry(UNFLAGGED, None, path, event.line, event.regime, event.kind, event.op, device, dtype,
                             event.message, fired_in=_regimes_of(same), float32=event.float32))
    order = {CONFIRMED: 0, UNFLAGGED: 1, ERROR: 2, NOT_FIRED: 3, NOT_REACHED: 4}
    entries.sort(key=lambda e: (order[e.status], e.path, e.line, e.code or ""))
    return entries


_LITERAL = re.compile(r"^`([^`]+)`")
_VANISHED = re.compile(r"^(\S+) rounds to 0")


def _number(pattern: "re.Pattern[str]", text: str) -> Optional[float]:
    match = pattern.match(text)
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def _eps_uses(findings: Sequence[Finding], abspaths: Dict[str, str], recorder: Recorder) -> Dict[int, set]:
    """id(finding) -> the lines where the eps an NL001 finding binds (a default
    argument, a constant) vanished: one hazard, at its binding and its uses.
    A line that has an NL001 finding of its own keeps its events."""
    flagged = {(abspaths.get(f.path, f.path), line) for f in findings if f.code == "NL001"
               for line in range(f.line, f.end_line + 1)}
    uses: Dict[int, set] = {}
    for finding in findings:
        value = _number(_LITERAL, finding.message) if finding.code == "NL001" else None
        if value is None:
            continue
        path = abspaths.get(finding.path, finding.path)
        for e in recorder.events:
            if (e.kind == "eps-vanishes" and e.path == path and (e.path, e.line) not in flagged
                    and math.isclose(_number(_VANISHED, e.message) or 0.0, value, rel_tol=1e-6)):
                uses.setdefault(id(finding), set()).add(e.line)
    return uses


def _regimes_of(events: Sequence[Event]) -> List[str]:
    out: List[str] = []
    for e in events:
        if e.regime and e.regime not in out:
            out.append(e.regime)
    return out


def _regime_artefact(event: Event) -> bool:
    """A float32/float64 value that went non-finite only because a regime
    altered the inputs: not what low precision does to the user's code."""
    return (event.dtype is not None and event.dtype not in _LOW
            and event.regime not in (None, "example", "train"))


def _display(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


LABELS = {"confirmed": "CONFIRMED", "not_fired": "NOT FIRED", "not_reached": "NOT REACHED", "unflagged": "UNFLAGGED",
          "error": "ERROR"}


def render_text(report: Report) -> str:
    precision = "pure half (model cast)" if report.precision == "half" else f"autocast on {report.device}"
    lines: List[str] = [
        f"nanlint confirm: {report.device}, {report.dtype}, {precision}; "
        f"regimes: {', '.join(report.regimes)}"
    ]
    for e in report.entries:
        label = LABELS[e.status].ljust(11)
        what = f"{e.code} [{e.name}]" if e.code else f"{e.event} in {e.op}"
        detail = e.message
        if e.status == "confirmed":
            detail = f"{e.event} in {e.op} ({e.regime_text()}): {e.message}"
        elif e.status == "unflagged":
            detail = f"({e.regime_text()}): {e.message}"
        if e.status == "error":
            lines.append(f"{label} {e.path}:{e.line}: {e.message}")
            continue
        lines.append(f"{label} {e.path}:{e.line}: {what} {detail}")
    counts = report.summary()
    lines.append(
        f"{counts['confirmed']} confirmed, {counts['not_fired']} not fired, "
        f"{counts['not_reached']} not reached, {counts['unflagged']} unflagged"
        + (f", {counts['error']} error{'s' if counts['error'] != 1 else ''}." if counts["error"] else ".")
    )
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


def _fatal(exc: BaseException) -> bool:
    """Out of memory ends the whole run: every other regime would fail the same way."""
    return isinstance(exc, MemoryError) or "out of memory" in describe(exc).lower()


def _record_failure(runner: "Runner", regime: str, exc: Exception, notes: List[str]) -> None:
    """An exception in a regime is an ``error`` event at the user's line (or a
    note when the regime itself made the inputs invalid for the loss)."""
    text = describe(exc)
    loc, op = raise_site(exc)
    if regime not in ("example", "train") and op in _LOSSES and "target" in text.lower():
        notes.append(f"regime {regime} skipped: it makes the inputs invalid as the target of {op} ({text})")
        return
    runner.recorder.regime = regime
    if runner.recorder.add("error", loc, op, text) is None and loc is None:
        notes.append(f"regime {regime} raised outside your code: {text}")


def _project_files(recorder: Recorder, joined: Iterable[str]) -> List[str]:
    """Files of the user's project (not torch, not an installed library) that
    an event landed in and whose findings are not joined yet."""
    known = set(joined)
    return sorted(p for p in {e.path for e in recorder.events} - known
                  if os.path.isfile(p) and not p.startswith(_TORCH_DIR) and not _is_library(p))


def run(target: Target, options: Options, findings: Sequence[Finding], abspaths: Dict[str, str],
        lint: Optional[Callable[[str], Tuple[str, List[Finding]]]] = None) -> Report:
    """Run the regimes and join what fired with ``findings``; ``lint(path)``
    gives (display path, findings) of any other project file an event lands in."""
    torch.manual_seed(options.seed)
    wanted = chosen_regimes(options.regimes)
    runner = Runner(target, options)
    generator = torch.Generator().manual_seed(options.seed)
    regimes = input_regimes(runner.inputs, generator, bool(runner.embeddings))
    if runner.trains:  # a model built in eval mode already ran the example that way
        regimes.insert(1, ("eval", runner.inputs))
    regimes = [(n, i) for n, i in regimes if n in wanted]
    names: List[str] = []
    notes: List[str] = []
    # each regime is isolated: what one raises is recorded, the others still run
    for name, inputs in regimes:
        runner._progress(f"regime {name}")
        names.append(name)
        try:
            runner.forward_backward(name, inputs)
        except Exception as exc:
            if _fatal(exc):
                raise
            _record_failure(runner, name, exc, notes)
    has_training = target.optimizer is not None or target.train_step is not None
    steps = options.steps if options.steps is not None else (5 if has_training else 0)
    if "train" in wanted and steps > 0 and (target.loss_fn is not None or has_training):
        names.append("train")
        try:
            runner.train(steps)
        except Exception as exc:
            if _fatal(exc):
                raise
            _record_failure(runner, "train", exc, notes)
    if "grad-push" in wanted and findings and runner.can_push():
        names.append("grad-push")
        runner.push(findings, abspaths)
    # a float32 reference run of each input regime in which something went non-finite
    forward = [n for n, _ in regimes]
    fired = [n for n in forward if any(e.regime == n and e.kind in _COMPARED for e in runner.recorder.events)]
    reference = runner.reference(fired)
    if reference is not None:
        compare_reference(runner.recorder.events, reference, fired)
    elif fired and runner.reference_note:
        notes.append(runner.reference_note)
    if lint is not None:
        abspaths = dict(abspaths)
        findings = list(findings)
        for path in _project_files(runner.recorder, abspaths.values()):
            shown, more = lint(path)
            abspaths[shown] = path
            findings.extend(more)
        findings.sort(key=lambda f: f.sort_key())
    report = Report(runner.device.type, options.dtype, options.precision, names)
    report.entries = join(findings, abspaths, runner.recorder, runner.device.type, options.dtype)
    artefacts: Dict[Tuple[str, int], List[Event]] = {}
    listed = {(abspaths.get(e.path, e.path), e.line) for e in report.entries}
    for e in runner.recorder.events:
        if _regime_artefact(e) and (e.path, e.line) not in listed:
            artefacts.setdefault((e.path, e.line), []).append(e)
    for (path, line), events in artefacts.items():
        first = events[0]
        notes.append(f"{_display(path)}:{line}: {first.kind} in {first.op} in {str(first.dtype).replace('torch.', '')} "
                     f"only under regime {', '.join(sorted({e.regime or '?' for e in events}))}: the regime's "
                     f"inputs overflow that dtype too, not a low-precision hazard")
    shown = {(e.path, e.line) for e in report.entries if e.status == ERROR}
    stopped: Dict[Tuple[str, int, str], List[str]] = {}
    for e in runner.recorder.events:
        if e.kind == "error":
            stopped.setdefault((_display(e.path), e.line, e.message), []).append(e.regime or "?")
    for (path, line, message), which in stopped.items():
        if (path, line) not in shown:
            notes.append(f"regime{'s' if len(which) > 1 else ''} {', '.join(which)} stopped at {path}:{line} "
                         f"({message}): what follows that line did not run there")
    report.notes.extend(notes)
    scaled = [n for n in names if n in VALUES]
    if runner.embeddings and scaled:
        n = runner.embeddings
        report.notes.append(f"the inputs are token ids: {', '.join(scaled)} applied to the output{'s' if n != 1 else ''} "
                            f"of the model's {n} embedding layer{'s' if n != 1 else ''}")
    if options.precision == "autocast" and runner.device.type == "cpu":
        report.notes.append("CPU autocast keeps exp, log, softmax, layer_norm and sums in the low precision "
                            "dtype; CUDA autocast runs them in float32, so CUDA may not fire what CPU does.")
    return report
