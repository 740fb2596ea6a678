"""Watch torch execution and record, per source line of the user's code, how
often it ran and where non-finite values *originate*.

Forward: a ``TorchFunctionMode`` sees every Python-level torch call, and the
first stack frame outside torch and nanlint is the user's line. Backward:
each forward output's ``grad_fn`` is tagged with that line and gets a hook
that compares the gradients the node receives with the ones it returns.
Checks use the sum trick: a float32 sum of the output is finite iff every
element is, and only a non-finite sum pays for a closer look.

Events (``Event.kind``):

- ``new-inf`` / ``new-nan``: an op whose inputs were finite produced inf/NaN
  (for NaN: whose inputs had no NaN), i.e. the origin, not the propagation;
- ``eps-vanishes``: a stabiliser literal that rounds to 0 in the tensor's dtype;
- ``gate-zero``: ``1 + tanh(b)`` / ``1 - tanh(b)`` with factors exactly 0;
- ``fill-overflow``: a fill value outside the dtype's range (PyTorch raises or
  silently stores inf);
- ``grad-nonfinite``: a backward op turned finite gradients non-finite (the
  forward line of its autograd node is reported), or the gradients reaching
  an optimizer step are non-finite;
- ``grad-overflow``: the total gradient norm at a step exceeds the dtype's max.

Deliberate ``-inf`` fills are not events by themselves; what they cause is,
and the NaN they cause names the fill's line as its cause.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.overrides import TorchFunctionMode

Loc = Tuple[str, int]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_NANLINT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_SKIP_PREFIXES = (_TORCH_DIR, _NANLINT_DIR, "<frozen")

# nanlint frames that only relay a call (stacked torch-function modes)
_PASS_THROUGH = frozenset({"__torch_function__"})
_INPLACE_DUNDERS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                              "__imod__", "__ipow__", "__imatmul__", "__iand__", "__ior__", "__ixor__",
                              "__ilshift__", "__irshift__"})
_LOW = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_FILL_OPS = frozenset({"masked_fill", "masked_fill_", "where", "full", "full_like", "fill_", "__setitem__", "index_fill", "index_fill_", "new_full"})
_KEEP_TAINT_OPS = frozenset({"triu", "tril", "triu_", "tril_", "expand", "view", "reshape", "to", "unsqueeze",
                             "squeeze", "transpose", "permute", "contiguous", "clone", "__getitem__", "add", "__add__",
                             "__radd__", "__iadd__", "add_", "type_as", "repeat", "expand_as", "masked_fill",
                             "masked_fill_", "where", "float", "half", "bfloat16", "flatten"})
_GATE_OPS = frozenset({"add", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "rsub"})
_EPS_OPS = frozenset({"add", "__add__", "__radd__", "add_", "__iadd__", "clamp", "clamp_min", "clamp_", "clamp_min_", "clip"})
_VIEW_LIKE = frozenset({"__get__", "size", "dim", "numel", "is_floating_point", "__len__", "__repr__", "__format__",
                        "data_ptr", "element_size", "is_contiguous", "stride", "storage_offset"})


@dataclass
class Event:
    kind: str
    path: str
    line: int
    op: str
    regime: Optional[str]
    message: str
    phase: str = "forward"
    cause: Optional[Loc] = None


@dataclass
class Recorder:
    """What a monitored run saw."""

    reached: Counter = field(default_factory=Counter)
    events: List[Event] = field(default_factory=list)
    regime: Optional[str] = None
    _seen: set = field(default_factory=set)

    def add(self, kind: str, loc: Optional[Loc], op: str, message: str, phase: str = "forward",
            cause: Optional[Loc] = None) -> Optional[Event]:
        if loc is None:
            return None
        key = (kind, loc, op, self.regime, phase)
        if key in self._seen:
            return None
        self._seen.add(key)
        event = Event(kind, loc[0], loc[1], op, self.regime, message, phase, cause)
        self.events.append(event)
        return event

    def events_at(self, path: str, first: int, last: int) -> List[Event]:
        return [e for e in self.events if e.path == path and first <= e.line <= last]


class NonFiniteError(FloatingPointError):
    """Raised by ``watch(raise_on_event=True)`` at the first event."""

    def __init__(self, event: Event) -> None:
        super().__init__(f"{event.path}:{event.line}: {event.kind} in {event.op}: {event.message}")
        self.event = event


def user_location() -> Optional[Loc]:
    """The innermost frame outside torch: the user's line. ``None`` when that
    frame is nanlint's own code (its surrogate loss, its training loop), which
    must not be blamed on whatever called nanlint (e.g. click)."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_NANLINT_DIR):
            if frame.f_code.co_name not in _PASS_THROUGH:
                return None
        elif not filename.startswith(_SKIP_PREFIXES):
            return os.path.realpath(filename) if not filename.startswith("<") else filename, frame.f_lineno
        frame = frame.f_back
    return None


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name


def _tensors(value: Any) -> List[torch.Tensor]:
    """The tensors in an argument tuple or an output, looking one level into
    nested lists/tuples (``torch.cat([a, b])``, ``torch.stack((a, b))``)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        out: List[torch.Tensor] = []
        for item in value:
            if isinstance(item, torch.Tensor):
                out.append(item)
            elif isinstance(item, (list, tuple)):
                out.extend(i for i in item if isinstance(i, torch.Tensor))
        return out
    return []


def is_finite(t: torch.Tensor) -> bool:
    """Exact, cheap: a float32 sum is finite iff every element is (an overflow of
    the sum itself is re-checked element-wise)."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return True
    with torch._C.DisableTorchFunction():
        s = t.detach().sum(dtype=torch.float32 if t.is_floating_point() else None)
        if bool(torch.isfinite(s).all()):
            return True
        return bool(torch.isfinite(t.detach()).all())


def _has_nan(t: torch.Tensor) -> bool:
    with torch._C.DisableTorchFunction():
        return bool(torch.isnan(t.detach()).any())


def _scalars(args: Sequence[Any], kwargs: Dict[str, Any]) -> List[Tuple[str, float]]:
    out = []
    for i, a in enumerate(args):
        if isinstance(a, float) and not isinstance(a, bool):
            out.append((f"arg{i}", a))
    for k, v in kwargs.items():
        if isinstance(v, float):
            out.append((k, v))
    return out


def _rounds_to_zero(value: float, dtype: torch.dtype) -> bool:
    return value != 0 and torch.tensor(value, dtype=dtype).item() == 0


class _ForwardMode(TorchFunctionMode):
    def __init__(self, monitor: "Monitor") -> None:
        super().__init__()
        self.m = monitor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func)
        if name in _VIEW_LIKE:
            return func(*args, **kwargs)
        m = self.m
        loc = user_location()
        rec = m.recorder
        if loc is not None:
            rec.reached[loc] += 1
        inputs = _tensors(args) + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
        low = [t for t in inputs if t.dtype in _LOW]
        # `add_` is in-place; dunders such as `__rdiv__`, `__pow__`, `__rsub__`
        # end in "_" too but return a new tensor
        inplace = (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_DUNDERS
        # inputs are inspected only when an output is non-finite; an in-place
        # op overwrites its input, so that one is looked at before the call
        pre: Optional[Tuple[bool, bool]] = None
        if inplace and inputs and inputs[0].is_floating_point():
            first_finite = is_finite(inputs[0])
            pre = (first_finite, (not first_finite) and _has_nan(inputs[0]))

        if low:
            dtype = low[0].dtype
            scalars = _scalars(args, kwargs)
            if name in _EPS_OPS or "eps" in kwargs or "epsilon" in kwargs:
                for key, value in scalars:
                    if (name in _EPS_OPS or key in ("eps", "epsilon")) and 0 < abs(value) < 1e-3 and _rounds_to_zero(value, dtype):
                        m.emit("eps-vanishes", loc, name,
                               f"{value:g} rounds to 0 in {_LOW[dtype]}: the guard does nothing")
            if name in _FILL_OPS:
                limit = torch.finfo(dtype).max
                for key, value in scalars:
                    if math.isfinite(value) and abs(value) > limit:
                        m.emit("fill-overflow", loc, name,
                               f"fill value {value:g} is outside {_LOW[dtype]} (max {limit:g}): it becomes inf")
        try:
            out = func(*args, **kwargs)
        except RuntimeError as exc:
            if "without overflow" in str(exc):
                m.emit("fill-overflow", loc, name, f"PyTorch refused the fill: {str(exc).splitlines()[0]}")
            raise

        outputs = _tensors(out)
        if inplace and inputs:
            outputs = [inputs[0]]
        if name == "tanh" and outputs:
            m.remember_tanh(outputs[0])
        if name in _GATE_OPS and outputs and any(m.is_tanh(t) for t in inputs):
            one = any(isinstance(a, (int, float)) and not isinstance(a, bool) and a == 1 for a in args)
            if one and outputs[0].is_floating_point():
                with torch._C.DisableTorchFunction():
                    zeros = int((outputs[0] == 0).sum())
                if zeros:
                    m.emit("gate-zero", loc, name,
                           f"{zeros} gate factor(s) exactly 0: tanh saturated at -1 in {outputs[0].dtype}")
        state: Optional[Tuple[bool, bool, Optional[Loc]]] = None

        def input_state() -> Tuple[bool, bool, Optional[Loc]]:
            others = inputs[1:] if pre is not None else inputs
            finite = all(is_finite(i) for i in others)
            nan = (not finite) and any(_has_nan(i) for i in others if i.is_floating_point())
            if pre is not None:
                finite, nan = finite and pre[0], nan or pre[1]
            return finite, nan, m.taint_of(inputs)

        for t in outputs:
            if not t.is_floating_point():
                continue
            finite = is_finite(t)
            if finite and t.requires_grad and t.grad_fn is not None and loc is not None:
                # a node whose forward value is already non-finite only passes
                # that on in backward: the forward event is the origin
                m.tag_node(t.grad_fn, loc)
            if finite:
                continue
            if state is None:
                state = input_state()
            inputs_finite, inputs_nan, cause = state
            nan_out = _has_nan(t)
            deliberate = name in _FILL_OPS and not nan_out and inputs_finite
            if deliberate:
                m.taint(t, loc)
                continue
            if inputs_finite:
                m.emit("new-nan" if nan_out else "new-inf", loc, name,
                       f"{name} produced {'NaN' if nan_out else 'inf'} from finite inputs ({t.dtype})")
                if not nan_out:
                    m.taint(t, loc)
            elif nan_out and not inputs_nan:
                message = f"{name} turned inf into NaN ({t.dtype})"
                if cause is not None and cause != loc:
                    message += f"; the inf came from line {cause[1]}"
                m.emit("new-nan", loc, name, message, cause=cause)
                if cause is not None and cause != loc and loc is not None:
                    m.emit("new-nan", cause, name,
                           f"the inf/-inf from this line became NaN in {name} at line {loc[1] if loc else '?'}")
            elif cause is not None and name in _KEEP_TAINT_OPS:
                m.taint(t, cause)
        return out


def _grad_hook(monitor: "Monitor", loc: Loc, name: str):
    # holds no reference to the node itself: a node -> hook -> node cycle
    # would keep every graph alive
    def hook(grad_inputs: Sequence[Optional[torch.Tensor]], grad_outputs: Sequence[Optional[torch.Tensor]]) -> None:
        if not monitor._active:
            return None
        bad = [g for g in grad_inputs if isinstance(g, torch.Tensor) and g.is_floating_point() and not is_finite(g)]
        if not bad:
            return None
        if all(is_finite(g) for g in grad_outputs if isinstance(g, torch.Tensor)):
            nan = any(_has_nan(g) for g in bad)
            monitor.emit("grad-nonfinite", loc, name,
                         f"backward of this line ({name}) produced {'NaN' if nan else 'inf'} "
                         f"gradients from finite ones", phase="backward")
        return None

    return hook


class _IdMap:
    """Tensor -> value by identity (tensors compare element-wise, so they cannot
    be dict keys or WeakSet members); entries die with their tensor."""

    def __init__(self) -> None:
        self._data: Dict[int, Tuple[Any, Any]] = {}

    def put(self, t: torch.Tensor, value: Any) -> None:
        key = id(t)
        try:
            ref = weakref.ref(t, lambda _r, k=key, d=self._data: d.pop(k, None))
        except TypeError:
            return
        self._data[key] = (ref, value)

    def get(self, t: torch.Tensor) -> Any:
        entry = self._data.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]


class Monitor:
    """Records events while active; use ``watch()`` rather than this directly."""

    def __init__(self, recorder: Optional[Recorder] = None, raise_on_event: bool = False,
                 capture: Optional[set] = None) -> None:
        self.recorder = recorder or Recorder()
        self.raise_on_event = raise_on_event
        self._tanh = _IdMap()
        self._taint = _IdMap()
        self._saved: Dict[str, Any] = {}
        self._active = 0  # backward hooks report only while the monitor is active
        self._node_key = ("nanlint-hooked", object())  # unique to this monitor

    # -- backward ------------------------------------------------------------
    def tag_node(self, node: Any, loc: Loc) -> None:
        """Name the forward line of an autograd node and check its backward:
        the hook sees the node's incoming gradients and the ones it produces,
        so only what the whole node returns counts (backward formulas may make
        NaN internally and mask it, e.g. the norm's ``0/0`` at a zero vector)."""
        try:
            meta = node.metadata
            if self._node_key in meta:
                return
            meta[self._node_key] = True
            meta["nanlint"] = loc
            node.register_hook(_grad_hook(self, loc, node.name()))
        except Exception:  # some nodes take neither metadata nor hooks
            pass

    # -- bookkeeping -------------------------------------------------------
    def emit(self, kind: str, loc: Optional[Loc], op: str, message: str, phase: str = "forward",
             cause: Optional[Loc] = None) -> None:
        event = self.recorder.add(kind, loc, op, message, phase, cause)
        if event is not None and self.raise_on_event:
            raise NonFiniteError(event)

    def remember_tanh(self, t: torch.Tensor) -> None:
        self._tanh.put(t, True)

    def is_tanh(self, t: torch.Tensor) -> bool:
        return self._tanh.get(t) is not None

    def taint(self, t: torch.Tensor, loc: Optional[Loc]) -> None:
        if loc is not None:
            self._taint.put(t, loc)

    def taint_of(self, tensors: Sequence[torch.Tensor]) -> Optional[Loc]:
        for t in tensors:
            loc = self._taint.get(t)
            if loc is not None:
                return loc
        return None

    # -- activation --------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator["Monitor"]:
        self._active += 1
        try:
            with _ForwardMode(self):
                yield self
        finally:
            self._active -= 1

    def check_step(self, parameters: Sequence[torch.Tensor], loc: Optional[Loc], op: str = "step") -> None:
        """Inspect the gradients an optimizer step is about to apply."""
        grads = [p.grad for p in parameters if getattr(p, "grad", None) is not None]
        if not grads:
            return
        with torch._C.DisableTorchFunction():
            norms = [g.detach().float().norm() for g in grads]
            total = float(torch.stack(norms).norm()) if norms else 0.0
        dtype = grads[0].dtype
        if not math.isfinite(total):
            self.emit("grad-nonfinite", loc, op, f"the gradients reaching this step are non-finite ({dtype})",
                      phase="step")
        elif dtype in _LOW and total > torch.finfo(dtype).max:
            self.emit("grad-overflow", loc, op,
                      f"total gradient norm {total:.3g} exceeds the {_LOW[dtype]} max {torch.finfo(dtype).max:g}",
                      phase="step")


@contextmanager
def watch(raise_on_event: bool = False, regime: Optional[str] = None) -> Iterator[Recorder]:
    """Record non-finite origins (and the other events) while the block runs::

        with nanlint.watch() as seen:
            loss = model(x).sum()
            loss.backward()
        for event in seen.events:
            print(event.path, event.line, event.kind, event.message)

    With ``raise_on_event=True`` the first event raises ``NonFiniteError``
    naming its source line.
    """
    recorder = Recorder(regime=regime)
    monitor = Monitor(recorder, raise_on_event=raise_on_event)
    with monitor.active():
        yield recorder
