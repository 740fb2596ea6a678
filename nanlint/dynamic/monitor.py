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
  also a running statistic that ``batch_norm`` / ``instance_norm`` update in
  place and do not return (a float16 ``running_var`` a batch overflows);
- ``eps-vanishes``: a stabiliser literal that rounds to 0 in the tensor's dtype
  (not the ``eps`` of ``layer_norm``, ``group_norm`` or ``rms_norm``, whose
  kernels add it to float32 statistics);
- ``gate-zero``: ``1 + tanh(b)`` / ``1 - tanh(b)`` with factors exactly 0;
- ``fill-overflow``: a fill value outside the dtype's range (PyTorch raises or
  silently stores inf);
- ``grad-nonfinite``: a backward op turned finite gradients non-finite (the
  forward line of its autograd node is reported), or the gradients reaching
  an optimizer step are non-finite. Not reported inside the backward of a
  ``GradScaler``-scaled loss: overflowing scaled gradients are what the
  scaler checks for (it skips that step and lowers the scale);
- ``grad-overflow``: the total gradient norm at a step exceeds the dtype's max;
- ``clip-before-unscale``: ``clip_grad_norm_`` / ``clip_grad_value_`` on
  gradients that came from a ``GradScaler``-scaled loss (``scaler.scale(loss)``
  whose backward ran) before ``scaler.unscale_(optimizer)`` covered those
  parameters: the clip threshold is applied to gradients multiplied by the
  scale (65536 by default), so it is effectively divided by it. Reported at
  the clip's line. While the monitor is active, ``torch.amp.GradScaler``'s
  ``scale`` / ``unscale_`` / ``update`` (which ``torch.cuda.amp.GradScaler``
  inherits) and ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` are
  wrapped (and restored afterwards). A disabled scaler (``enabled=False``, or
  a CUDA scaler without CUDA) returns the loss unchanged: nothing is scaled,
  so there is no hazard and no event. The clip functions are wrapped in
  ``torch.nn.utils`` and ``torch.nn.utils.clip_grad``, and in every loaded
  module outside torch that imported one by name (``from torch.nn.utils
  import clip_grad_norm_``); a reference kept elsewhere (a dict, a default
  argument) is not seen;
- ``bce-saturated``: ``binary_cross_entropy`` (``F.binary_cross_entropy`` or
  ``nn.BCELoss``) whose input probability is exactly 0 where the target is
  above 0, or exactly 1 where it is below 1: its log is clamped at -100, and
  the gradient through the sigmoid that made it is 0 (in float16 the
  gradient with respect to the probability is inf). Reported at the line of
  the loss call, where NL107 reports; when the probability is a ``sigmoid``
  output from another line, that line gets the event too (with the loss line
  as its cause);
- ``uninitialized``: a tensor allocated without a value (``torch.empty``,
  ``empty_like``, ``new_empty``, ``empty_strided``, ``torch.Tensor(n, m)``;
  also ``skip_init`` and ``module.to_empty()``, which use ``empty_like``) that
  is still NaN, and was never written in place since, when an op uses it,
  reported at the line that allocated it. It needs ``fill_uninitialized=True`` (``nanlint confirm`` sets it, also
  while it builds the target): ``torch.use_deterministic_algorithms(True,
  warn_only=True)`` with ``torch.utils.deterministic.fill_uninitialized_memory``
  makes uninitialised memory NaN (the previous settings are restored
  afterwards). ``torch.Tensor(n, m)`` does not reach a ``TorchFunctionMode``;
  ``Tensor.__new__`` is wrapped while the monitor is active to see it. The
  legacy ``torch.FloatTensor(n, m)`` / ``HalfTensor`` constructors are seen by
  neither: their NaN is then propagated, never reported. Memory the op itself
  allocates is never reported as ``new-nan``.

- ``underflow``: an ``exp``, ``softmax``, ``sigmoid`` or ``softplus`` whose
  low-precision result is exactly 0 (never so in exact arithmetic) where a
  later op turned those zeros into inf/NaN (a log, a division), reported at
  the line that made the zeros; the later op's event names it as its cause.
  The zeros are followed through scaling by numbers, positive powers, sums
  and views of that one tensor.

An op no line of the user's runs (all its frames are torch's: a model made of
torch's classes only) is reported, when ``Monitor.scope`` is set, at the line
that built the innermost module running it (see ``ModuleScope``).

Deliberate ``-inf`` fills are not events by themselves; what they cause is,
and the NaN they cause names the fill's line as its cause.
"""

from __future__ import annotations

import math
import os
import sys
import sysconfig
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.overrides import TorchFunctionMode

from .target import describe

Loc = Tuple[str, int]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_NANLINT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_SKIP_PREFIXES = (_TORCH_DIR, _NANLINT_DIR, "<frozen")

# nanlint frames that only relay a call (stacked torch-function modes)
_PASS_THROUGH = frozenset({"__torch_function__", "_check", "_relay"})
_INPLACE_DUNDERS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                              "__imod__", "__ipow__", "__imatmul__", "__iand__", "__ior__", "__ixor__",
                              "__ilshift__", "__irshift__"})
_LOW = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_FILL_OPS = frozenset({"masked_fill", "masked_fill_", "where", "full", "full_like", "fill_", "__setitem__", "index_fill", "index_fill_", "new_full"})
_KEEP_TAINT_OPS = frozenset({"triu", "tril", "triu_", "tril_", "expand", "view", "reshape", "to", "unsqueeze",
                             "squeeze", "transpose", "permute", "contiguous", "clone", "__getitem__", "add", "__add__",
                             "__radd__", "__iadd__", "add_", "type_as", "repeat", "expand_as", "masked_fill",
                             "masked_fill_", "where", "float", "half", "bfloat16", "flatten",
                             # an inf that is only carried along (picked, scaled, negated)
                             "gather", "index_select", "take_along_dim", "mul", "__mul__", "__rmul__",
                             "neg", "__neg__", "select", "narrow", "chunk", "split"})
_GATE_OPS = frozenset({"add", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "rsub"})
_EPS_OPS = frozenset({"add", "__add__", "__radd__", "add_", "__iadd__", "clamp", "clamp_min", "clamp_", "clamp_min_", "clip"})
# norms whose kernels compute a float16/bfloat16 input's statistics in float32
# and add ``eps`` there: a 1e-12 that float16 cannot hold still guards a
# constant row (NL001 does not flag them either); batch_norm and instance_norm
# are not among them (in half on the CPU a constant batch gives NaN)
_EPS_IN_FLOAT32 = frozenset({"layer_norm", "group_norm", "rms_norm"})
_EMPTY_OPS = frozenset({"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"})
# norms that update running statistics in place, which they do not return:
# op -> (the flag that makes them update, its default). running_mean and
# running_var are arguments 1 and 2 of torch.nn.functional's, 3 and 4 of torch's
_RUNNING_STATS = {"batch_norm": ("training", False), "native_batch_norm": ("training", False),
                  "instance_norm": ("use_input_stats", True)}
# ops with a post-call check of their own: one dict lookup per op
_SPECIAL = {"tanh": "tanh", "sigmoid": "sigmoid", "expit": "sigmoid", "binary_cross_entropy": "bce",
            **{n: "gate" for n in _GATE_OPS}}
# ops whose result is positive in exact arithmetic: an exact 0 in their low
# precision output is an underflow (float16 flushes magnitudes below 6e-8 to 0)
_POSITIVE_OPS = frozenset({"exp", "exp_", "exp2", "sigmoid", "sigmoid_", "expit", "softplus", "softmax", "_softmax"})
# ops that keep where a single tensor's zeros are (scaling by a number, a
# positive power, sums of non-negative terms, views): the zeros keep their origin
_CARRY_ZEROS = frozenset({"mul", "__mul__", "__rmul__", "pow", "__pow__", "square", "sqrt", "sum", "mean", "prod",
                          "view", "reshape", "expand", "expand_as", "unsqueeze", "squeeze", "transpose", "permute",
                          "contiguous", "clone", "to", "float", "half", "bfloat16", "flatten", "__getitem__",
                          "select", "narrow", "gather", "index_select", "abs", "neg", "__neg__", "detach"})
_ZEROS_TRACKED = _POSITIVE_OPS | _CARRY_ZEROS  # one lookup per op
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
    dtype: Optional[torch.dtype] = None  # of the value that went non-finite, where one did
    #: the same line in a float32 run of the same regime: also non-finite
    #: (True), finite (False), not compared (None); set by ``nanlint confirm``
    float32: Optional[bool] = None


@dataclass
class Recorder:
    """What a monitored run saw."""

    reached: Counter = field(default_factory=Counter)
    events: List[Event] = field(default_factory=list)
    regime: Optional[str] = None
    _seen: set = field(default_factory=set)

    def add(self, kind: str, loc: Optional[Loc], op: str, message: str, phase: str = "forward",
            cause: Optional[Loc] = None, dtype: Optional[torch.dtype] = None) -> Optional[Event]:
        if loc is None:
            return None
        key = (kind, loc, op, self.regime, phase)
        if key in self._seen:
            return None
        self._seen.add(key)
        event = Event(kind, loc[0], loc[1], op, self.regime, message, phase, cause, dtype)
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


def raise_site(exc: BaseException) -> Tuple[Optional[Loc], str]:
    """Where an exception came from: the user's line and the torch op that
    raised there (recorded by the monitor), else the innermost frame of the
    user's code in its traceback and the exception's type."""
    site = getattr(exc, "nanlint_site", None)
    if site is not None:
        return site
    loc: Optional[Loc] = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(_SKIP_PREFIXES) and not filename.startswith("<"):
            loc = (os.path.realpath(filename), tb.tb_lineno)
        tb = tb.tb_next
    return loc, type(exc).__name__


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
        try:
            if bool(torch.isfinite(s).all()):
                return True
        except (RuntimeError, NotImplementedError):  # no values to read: meta / fake tensors
            return True
        return bool(torch.isfinite(t.detach()).all())


def _has_nan(t: torch.Tensor) -> bool:
    with torch._C.DisableTorchFunction():
        try:
            return bool(torch.isnan(t.detach()).any())
        except (RuntimeError, NotImplementedError):
            return False


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
        inside: Optional[str] = None
        if loc is None and m.scope is not None:
            site = m.scope.site()
            if site is not None:
                loc, inside = site
        if inside is None and m._inside is None:
            return self._check(func, name, args, kwargs, loc)
        outer, m._inside = m._inside, inside
        try:
            return self._check(func, name, args, kwargs, loc)
        finally:
            m._inside = outer

    def _check(self, func: Any, name: str, args: Sequence[Any], kwargs: Dict[str, Any], loc: Optional[Loc]) -> Any:
        m = self.m
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

        running = _running_stats(func, name, args, kwargs)

        if low:
            dtype = low[0].dtype
            scalars = _scalars(args, kwargs)
            if name in _EPS_OPS or (("eps" in kwargs or "epsilon" in kwargs) and name not in _EPS_IN_FLOAT32):
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
        except Exception as exc:
            text = describe(exc)
            if "without overflow" in text:
                m.emit("fill-overflow", loc, name, f"PyTorch refused the fill: {text.partition(': ')[2]}")
            if loc is not None and not hasattr(exc, "nanlint_site"):
                try:
                    exc.nanlint_site = (loc, name)  # the innermost op that raised, at the user's line
                except Exception:  # an exception that takes no attributes
                    pass
            raise

        for label, t in running:
            if not is_finite(t):
                nan = _has_nan(t)
                m.emit("new-nan" if nan else "new-inf", loc, name,
                       f"{name} updated its {label} to {'NaN' if nan else 'inf'} ({t.dtype}) from finite values: "
                       f"the batch's statistics do not fit the buffer's dtype, and in eval mode every batch is "
                       f"normalised with it", dtype=t.dtype)
        outputs = _tensors(out)
        if inplace and inputs:
            outputs = [inputs[0]]
        if name in _ZEROS_TRACKED and outputs and outputs[0].dtype in _LOW:
            m.zeros_from(name, loc, inputs, outputs[0])
        special = _SPECIAL.get(name)
        if special is not None and outputs:
            if special == "tanh":
                m.remember_tanh(outputs[0])
            elif special == "sigmoid":
                m.remember_sigmoid(outputs[0], loc)
            elif special == "bce":
                m.check_bce(args, kwargs, loc)
            elif any(m.is_tanh(t) for t in inputs):
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
            if finite and loc is not None and t.requires_grad and torch.is_grad_enabled():
                # a node whose forward value is already non-finite only passes
                # that on in backward: the forward event is the origin. Under
                # no_grad nothing is recorded, and reading ``grad_fn`` of a view
                # made there raises (nn.Embedding's padding_idx zeroing)
                node = _grad_fn(t)
                if node is not None:
                    m.tag_node(node, loc, m._inside)
            if finite:
                continue
            if name in _EMPTY_OPS:
                # uninitialised memory (NaN under fill_uninitialized) is not an
                # origin of anything yet; what reads it while it is NaN is
                m.remember_empty(t, loc, name)
                continue
            if state is None:
                state = input_state()
            inputs_finite, inputs_nan, cause = state
            if inputs_nan:
                m.check_uninitialized(inputs, loc, name)
            nan_out = _has_nan(t)
            deliberate = name in _FILL_OPS and not nan_out and inputs_finite
            if deliberate:
                m.taint(t, loc)
                continue
            if inputs_finite:
                message = f"{name} produced {'NaN' if nan_out else 'inf'} from finite inputs ({t.dtype})"
                origin = m.underflow_origin(inputs, loc)
                if origin is not None:
                    where, how = origin
                    message += f"; the zeros it divided by or took the log of came from {how} at line {where[1]}, which underflowed"
                    m.emit("underflow", where, how,
                           f"{how} underflowed to exact 0 in {_LOW[t.dtype] if t.dtype in _LOW else t.dtype} here "
                           f"(its result is never 0 in exact arithmetic; float16 flushes magnitudes below 6e-8 to "
                           f"0, bfloat16 below 9e-41): {name} at line {loc[1] if loc else '?'} turned the zeros "
                           f"into {'NaN' if nan_out else 'inf'}", cause=loc)
                m.emit("new-nan" if nan_out else "new-inf", loc, name, message, dtype=t.dtype,
                       cause=origin[0] if origin is not None else None)
                if not nan_out:
                    m.taint(t, loc)
            elif nan_out and not inputs_nan:
                message = f"{name} turned inf into NaN ({t.dtype})"
                if cause is not None and cause != loc:
                    message += f"; the inf came from line {cause[1]}"
                m.emit("new-nan", loc, name, message, cause=cause, dtype=t.dtype)
                if cause is not None and cause != loc and loc is not None:
                    m.emit("new-nan", cause, name,
                           f"the inf/-inf from this line became NaN in {name} at line {loc[1] if loc else '?'}")
            elif cause is not None and name in _KEEP_TAINT_OPS:
                m.taint(t, cause)
        return out


def _inside_text(inside: Optional[str]) -> str:
    return "" if inside is None else (f" (inside {inside}: torch's own code, which no line of yours runs; "
                                      f"shown at the line that built it)")


def _running_stats(func: Any, name: str, args: Sequence[Any],
                   kwargs: Dict[str, Any]) -> List[Tuple[str, torch.Tensor]]:
    """The running statistics a norm is about to update in place, while they
    are still finite: the op returns only its output, so an overflow of these
    buffers (a batch variance above float16's max) is otherwise never seen."""
    spec = _RUNNING_STATS.get(name)
    if spec is None:
        return []
    flag_name, flag_default = spec
    flag = args[5] if len(args) > 5 else kwargs.get(flag_name, flag_default)
    if not flag:
        return []
    positions = (1, 2) if getattr(func, "__module__", None) == "torch.nn.functional" else (3, 4)
    out = []
    for label, at in zip(("running_mean", "running_var"), positions):
        t = args[at] if len(args) > at else kwargs.get(label)
        if isinstance(t, torch.Tensor) and t.is_floating_point() and is_finite(t):
            out.append((label, t))
    return out


def _grad_fn(t: torch.Tensor) -> Any:
    """``t.grad_fn``, or None where torch refuses to give it (a view created in
    no_grad mode whose base was modified in place since)."""
    try:
        return t.grad_fn
    except RuntimeError:
        return None


def _grad_hook(monitor: "Monitor", loc: Loc, name: str, inside: Optional[str] = None):
    # holds no reference to the node itself: a node -> hook -> node cycle
    # would keep every graph alive
    def hook(grad_inputs: Sequence[Optional[torch.Tensor]], grad_outputs: Sequence[Optional[torch.Tensor]]) -> None:
        if not monitor._active:
            return None
        if monitor._scaled_tasks and torch._C._current_graph_task_id() in monitor._scaled_tasks:
            # the backward of a GradScaler-scaled loss: overflowing gradients
            # are what the scaler checks for and skips the step on
            return None
        bad = [g for g in grad_inputs if isinstance(g, torch.Tensor) and g.is_floating_point() and not is_finite(g)]
        if not bad:
            return None
        if all(is_finite(g) for g in grad_outputs if isinstance(g, torch.Tensor)):
            nan = any(_has_nan(g) for g in bad)
            monitor.emit("grad-nonfinite", loc, name,
                         f"backward of this line ({name}) produced {'NaN' if nan else 'inf'} "
                         f"gradients from finite ones" + _inside_text(inside), phase="backward", dtype=bad[0].dtype)
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


class ModuleScope:
    """Which module is running, for an op none of whose frames is the user's: a
    model made only of torch's classes (a bare ``nn.MultiheadAttention``) runs
    no line of the user's. Such an op is reported at the line that built the
    innermost running module, naming it (``model.1 (torch.nn.MultiheadAttention)``).
    Global forward hooks keep the stack while the monitor is active."""

    def __init__(self, model: Any, sites: Dict[int, Loc]) -> None:
        self._names = {id(m): name for name, m in model.named_modules()}
        self._sites = sites  # id(module) -> the line that built it
        self._keep = list(model.modules())  # the ids stay valid while this lives
        self._stack: List[Any] = []
        self._handles: List[Any] = []

    def install(self) -> None:
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self._stack.clear()
        self._handles = [register_module_forward_pre_hook(self._enter),
                         register_module_forward_hook(self._leave, always_call=True)]

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack.clear()

    def _enter(self, module: Any, args: Any) -> None:
        self._stack.append(module)

    def _leave(self, module: Any, args: Any, output: Any) -> None:
        while self._stack:
            if self._stack.pop() is module:
                break

    def site(self) -> Optional[Tuple[Loc, str]]:
        """(the line that built the innermost running module, its description)."""
        for module in reversed(self._stack):
            loc = self._sites.get(id(module))
            if loc is not None:
                name = self._names.get(id(module))
                return loc, f"{'model.' + name if name else 'the model'} ({_class_name(type(module))})"
        return None


def _class_name(cls: type) -> str:
    """``torch.nn.MultiheadAttention`` rather than where torch defines it."""
    if cls.__module__.startswith("torch.nn.modules.") and getattr(torch.nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def module_sites(model: Any, built_at: Any) -> Dict[int, Loc]:
    """id(module) -> the line that built it, for ``model``'s modules that
    ``built_at`` (``Monitor.built_at`` of the monitor that watched the model
    being built) knows."""
    if built_at is None:
        return {}
    out: Dict[int, Loc] = {}
    for module in model.modules():
        loc = built_at.get(module)
        if loc is not None:
            out[id(module)] = loc
    return out


def _module_init_wrapper(monitor: "Monitor", original: Any):
    """``nn.Module.__init__``: remember the user's line that built each module
    (for a module torch builds inside another, the line that built that one)."""
    def _relay(self: Any, *args: Any, **kwargs: Any) -> Any:
        built = monitor.built_at
        try:
            if built is not None and self not in built:
                loc = user_location()
                if loc is not None:
                    built[self] = loc
        except TypeError:  # a module that is unhashable or takes no weak references
            pass
        return original(self, *args, **kwargs)

    _relay.__wrapped__ = original  # type: ignore[attr-defined]
    return _relay


class Monitor:
    """Records events while active; use ``watch()`` rather than this directly."""

    def __init__(self, recorder: Optional[Recorder] = None, raise_on_event: bool = False,
                 capture: Optional[set] = None, fill_uninitialized: bool = False) -> None:
        self.recorder = recorder or Recorder()
        self.raise_on_event = raise_on_event
        self.fill_uninitialized = fill_uninitialized
        self._tanh = _IdMap()
        self._sigmoid = _IdMap()
        # uninitialised allocations: storage (shared by views and by an
        # nn.Parameter made from the tensor) -> line; and parameters adopted
        # from such storage before a dtype/device cast replaced it
        self._empty = _IdMap()
        self._uninit_params = _IdMap()
        self._scalers = _IdMap()  # GradScaler -> _ScalerState
        self._scaled_tasks: set = set()  # autograd graph tasks that started at a scaled loss
        self._undo: List[Tuple[Any, str, Any, bool]] = []
        self._taint = _IdMap()
        self._zeros = _IdMap()  # low-precision result -> (line, op) its exact zeros may come from
        self._saved: Dict[str, Any] = {}
        self._active = 0  # backward hooks report only while the monitor is active
        self._node_key = ("nanlint-hooked", object())  # unique to this monitor
        #: names the module running an op no line of the user's runs (see ModuleScope)
        self.scope: Optional[ModuleScope] = None
        self._inside: Optional[str] = None  # that module, while such an op is checked
        #: module -> the line that built it, recorded while active (``building``)
        self.built_at: Optional["weakref.WeakKeyDictionary[Any, Loc]"] = None

    # -- backward ------------------------------------------------------------
    def tag_node(self, node: Any, loc: Loc, inside: Optional[str] = None) -> None:
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
            node.register_hook(_grad_hook(self, loc, node.name(), inside))
        except Exception:  # some nodes take neither metadata nor hooks
            pass

    # -- bookkeeping -------------------------------------------------------
    def emit(self, kind: str, loc: Optional[Loc], op: str, message: str, phase: str = "forward",
             cause: Optional[Loc] = None, dtype: Optional[torch.dtype] = None) -> None:
        if self._inside is not None:
            message += _inside_text(self._inside)
        event = self.recorder.add(kind, loc, op, message, phase, cause, dtype)
        if event is not None and self.raise_on_event:
            raise NonFiniteError(event)

    def remember_tanh(self, t: torch.Tensor) -> None:
        self._tanh.put(t, True)

    def is_tanh(self, t: torch.Tensor) -> bool:
        return self._tanh.get(t) is not None

    def remember_sigmoid(self, t: torch.Tensor, loc: Optional[Loc]) -> None:
        if loc is not None:
            self._sigmoid.put(t, loc)

    def check_bce(self, args: Sequence[Any], kwargs: Dict[str, Any], loc: Optional[Loc]) -> None:
        """``binary_cross_entropy(p, y)``: p exactly 0 where y > 0, or exactly 1
        where y < 1, is the clamped -100 log with a dead sigmoid gradient."""
        p = args[0] if len(args) > 0 else kwargs.get("input")
        y = args[1] if len(args) > 1 else kwargs.get("target")
        if not isinstance(p, torch.Tensor) or not isinstance(y, torch.Tensor) or not p.is_floating_point():
            return
        with torch._C.DisableTorchFunction():
            pd, yd = p.detach(), y.detach()
            saturated = int((((pd == 0) & (yd > 0)) | ((pd == 1) & (yd < 1))).sum())
        if not saturated:
            return
        source = self._sigmoid.get(p)
        message = (f"{saturated} probabilit{'y is' if saturated == 1 else 'ies are'} exactly 0 or 1 ({p.dtype}) "
                   f"where the target differs: the log is clamped at -100 and the gradient through the "
                   f"sigmoid is 0; use binary_cross_entropy_with_logits on the logits")
        if source is not None and source != loc:
            message += f" (the sigmoid at line {source[1]} saturated)"
        self.emit("bce-saturated", loc, "binary_cross_entropy", message, cause=source if source != loc else None)
        if source is not None and loc is not None and source != loc:
            self.emit("bce-saturated", source, "sigmoid",
                      f"this sigmoid saturated to exactly 0/1 in {p.dtype}; binary_cross_entropy at line "
                      f"{loc[1]} clamps its log and gets no gradient", cause=loc)

    # -- uninitialised memory -----------------------------------------------
    def remember_empty(self, t: torch.Tensor, loc: Optional[Loc], op: str = "empty") -> None:
        if loc is None or not t.is_floating_point():
            return
        try:
            # the version counter (shared with views and with an nn.Parameter
            # made from it) tells later whether anything wrote to it in place
            self._empty.put(t.untyped_storage(), (loc, op, t._version))
        except (RuntimeError, NotImplementedError):  # meta / fake tensors have no storage
            pass

    def adopt_parameters(self, model: Any, allocations: Optional["Monitor"] = None) -> None:
        """Remember which of ``model``'s parameters sit in uninitialised
        storage (recorded here or by ``allocations``, the monitor that watched
        the model being built), before a cast gives them new storage."""
        sources = [self] + ([allocations] if allocations is not None else [])
        for p in model.parameters():
            for source in sources:
                entry = source._empty_entry(p)
                if entry is not None:
                    self._uninit_params.put(p, entry)
                    break

    def _empty_entry(self, t: torch.Tensor) -> Any:
        """(line, op, version) of the allocation ``t`` still is, untouched."""
        if not self._empty._data:
            return None
        try:
            entry = self._empty.get(t.untyped_storage())
        except (RuntimeError, NotImplementedError):
            return None
        return entry if entry is not None and entry[2] == t._version else None

    def check_uninitialized(self, inputs: Sequence[torch.Tensor], loc: Optional[Loc], op: str) -> None:
        """An op read NaN: if that NaN is memory that was allocated and never
        written, the allocation line is where the bug is."""
        if not self._empty._data and not self._uninit_params._data:
            return
        for t in inputs:
            if not t.is_floating_point():
                continue
            entry = self._uninit_params.get(t)
            if entry is not None and entry[2] != t._version:
                entry = None  # written since (an initialiser, an optimizer step)
            entry = entry or self._empty_entry(t)
            if entry is None or not _has_nan(t):
                continue
            where, how, _ = entry
            kind = "parameter" if isinstance(t, torch.nn.Parameter) else "tensor"
            self.emit("uninitialized", where, how,
                      f"this {kind} was allocated by {how} and never initialised: it is still NaN "
                      f"(uninitialised memory) when {op} at line {loc[1] if loc else '?'} uses it",
                      cause=None)

    # -- GradScaler / clipping ------------------------------------------------
    def _scaler_state(self, scaler: Any) -> "_ScalerState":
        state = self._scalers.get(scaler)
        if state is None:
            state = _ScalerState()
            self._scalers.put(scaler, state)
        return state

    def check_clip(self, params: Sequence[torch.Tensor], op: str, loc: Optional[Loc]) -> None:
        with_grad = [p for p in params if isinstance(p, torch.Tensor) and p.grad is not None]
        if not with_grad:
            return
        for ref, state in list(self._scalers._data.values()):
            scaler = ref()
            if scaler is None or not state.backward:
                continue
            scaled = [p for p in with_grad if id(p) not in state.unscaled]
            if not scaled:
                continue
            try:
                scale = float(scaler.get_scale())
            except Exception:
                scale = float("nan")
            self.emit("clip-before-unscale", loc, op,
                      f"{op} on {len(scaled)} gradient tensor(s) still multiplied by the GradScaler scale "
                      f"({scale:g}): call scaler.unscale_(optimizer) first, else the clip threshold is "
                      f"effectively divided by {scale:g}", phase="step")
            return

    # -- underflow ----------------------------------------------------------
    def zeros_from(self, name: str, loc: Optional[Loc], inputs: Sequence[torch.Tensor], out: torch.Tensor) -> None:
        """Remember where a low-precision result's zeros could come from: the
        line of a positive op (exp, softmax, ...), or the origin carried by
        the one tensor input of a scaling, a positive power, a sum or a view."""
        if name in _POSITIVE_OPS:
            if loc is not None:
                self._zeros.put(out, (loc, name))
            return
        if len(inputs) == 1 and self._zeros._data:
            origin = self._zeros.get(inputs[0])
            if origin is not None and out is not inputs[0]:
                self._zeros.put(out, origin)

    def underflow_origin(self, inputs: Sequence[torch.Tensor], loc: Optional[Loc]) -> Optional[Tuple[Loc, str]]:
        """(line, op) of an underflow whose exact zeros are among ``inputs``,
        when it is another line than ``loc``."""
        if not self._zeros._data:
            return None
        for t in inputs:
            origin = self._zeros.get(t)
            if origin is None or origin[0] == loc or not t.is_floating_point():
                continue
            with torch._C.DisableTorchFunction():
                if bool((t.detach() == 0).any()):
                    return origin
        return None

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
        outermost = self._active == 0
        if outermost:
            self._install()
        self._active += 1
        try:
            with _ForwardMode(self):
                yield self
        finally:
            self._active -= 1
            if outermost:
                self._uninstall()

    def _install(self) -> None:
        """Wrap GradScaler, the clip functions and ``Tensor.__new__``, and turn
        on NaN-filled uninitialised memory if asked: undone by ``_uninstall``."""
        undo = self._undo = []
        if self.fill_uninitialized:
            # first: the call imports torch._dynamo, which registers a polyfill
            # for Tensor.__new__ and must see the real one
            self._deterministic = (torch.are_deterministic_algorithms_enabled(),
                                   torch.is_deterministic_algorithms_warn_only_enabled(),
                                   torch.utils.deterministic.fill_uninitialized_memory)
            if not self._deterministic[0]:
                torch.use_deterministic_algorithms(True, warn_only=True)
            torch.utils.deterministic.fill_uninitialized_memory = True

        def patch(owner: Any, name: str, value: Any) -> None:
            had = name in vars(owner)
            undo.append((owner, name, vars(owner).get(name), had))
            setattr(owner, name, value)

        try:
            from torch.amp.grad_scaler import GradScaler
        except ImportError:  # pragma: no cover - very old torch
            GradScaler = None
        if GradScaler is not None:
            for name in ("scale", "unscale_", "update"):
                patch(GradScaler, name, _scaler_wrapper(self, name, getattr(GradScaler, name)))
        import torch.nn.utils as nn_utils
        import torch.nn.utils.clip_grad as clip_grad
        wrappers = {}
        for name in ("clip_grad_norm_", "clip_grad_value_"):
            original = getattr(clip_grad, name, None)
            if original is None:
                continue
            wrappers[name] = (original, _clip_wrapper(self, name, original))
            for owner in (clip_grad, nn_utils):
                if getattr(owner, name, None) is original:
                    patch(owner, name, wrappers[name][1])
        # also the user's modules that imported one by name
        # (`from torch.nn.utils import clip_grad_norm_` before monitoring)
        by_function = {id(orig): wrapped for orig, wrapped in wrappers.values()}
        for owner, attr, original in _bindings_of({n: o for n, (o, _) in wrappers.items()},
                                                  exclude=(clip_grad, nn_utils)):
            patch(owner, attr, by_function[id(original)])
        if self.fill_uninitialized:
            patch(torch.Tensor, "__new__", _tensor_new_wrapper(self))
        if self.built_at is not None:
            patch(torch.nn.Module, "__init__", _module_init_wrapper(self, torch.nn.Module.__init__))
        if self.scope is not None:
            self.scope.install()

    def _uninstall(self) -> None:
        if self.scope is not None:
            self.scope.uninstall()
        for owner, name, value, had in reversed(self._undo):
            if had:
                setattr(owner, name, value)
            else:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
        self._undo = []
        if self.fill_uninitialized:
            enabled, warn_only, fill = self._deterministic
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
            torch.utils.deterministic.fill_uninitialized_memory = fill

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


@dataclass
class _ScalerState:
    backward: bool = False  # a scaled loss's backward ran since the last update()
    unscaled: set = field(default_factory=set)  # ids of parameters unscale_() covered since


def _scaler_wrapper(monitor: Monitor, name: str, original: Any):
    def _relay(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if not monitor._active:
            return result
        state = monitor._scaler_state(self)
        if name == "scale":
            outputs = args[0] if args else kwargs.get("outputs")
            if result is not outputs:  # a disabled scaler returns the loss itself
                state.unscaled.clear()

                def seen(grad: torch.Tensor, state: _ScalerState = state) -> None:
                    state.backward = True
                    task = torch._C._current_graph_task_id()
                    if task != -1:
                        if len(monitor._scaled_tasks) > 64:
                            monitor._scaled_tasks.clear()
                        monitor._scaled_tasks.add(task)

                for t in _tensors(result):
                    if t.requires_grad:
                        t.register_hook(seen)
        elif name == "unscale_":
            optimizer = args[0] if args else kwargs.get("optimizer")
            for group in getattr(optimizer, "param_groups", ()):
                state.unscaled.update(id(p) for p in group.get("params", ()))
        else:  # update: the iteration is over
            state.backward = False
            state.unscaled.clear()
        return result

    _relay.__wrapped__ = original  # type: ignore[attr-defined]
    return _relay


def _clip_wrapper(monitor: Monitor, name: str, original: Any):
    def _relay(parameters: Any, *args: Any, **kwargs: Any) -> Any:
        if monitor._active and monitor._scalers._data:
            parameters = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
            monitor.check_clip(parameters, name, user_location())
        return original(parameters, *args, **kwargs)

    _relay.__wrapped__ = original  # type: ignore[attr-defined]
    _relay.__name__ = name
    return _relay


def _tensor_new_wrapper(monitor: Monitor):
    """``torch.Tensor(n, m)`` allocates without a value and reaches no
    ``TorchFunctionMode``: record it here."""
    base = torch._C.TensorBase.__new__

    def _relay(*args: Any, **kwargs: Any) -> Any:  # (cls, *sizes): a wildcard signature, as dynamo expects
        t = base(*args, **kwargs)
        args = args[1:]
        if (args and all(isinstance(a, int) and not isinstance(a, bool) for a in args)
                and t.is_floating_point() and t.numel()):
            monitor.remember_empty(t, user_location(), "torch.Tensor")
        return t

    return staticmethod(_relay)


_LIBRARY_DIRS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")} if p
)


_LIBRARY_CACHE: Dict[str, bool] = {}


def _is_library(path: str) -> bool:
    known = _LIBRARY_CACHE.get(path)
    if known is None:
        known = _LIBRARY_CACHE[path] = os.path.realpath(path).startswith(_LIBRARY_DIRS)
    return known


def _bindings_of(functions: Dict[str, Any], exclude: Sequence[Any]) -> List[Tuple[Any, str, Any]]:
    """(module, attribute, function) for each module outside torch that holds
    one of ``functions`` (name -> function): under the same name in any module
    (``from torch.nn.utils import clip_grad_norm_``), under any name in the
    user's own modules, those outside the standard library and site-packages
    (``from torch.nn.utils import clip_grad_norm_ as clip``). One pass over
    ``sys.modules`` (~1 ms with torch loaded)."""
    found = []
    targets = {id(f): f for f in functions.values()}
    for module in list(sys.modules.values()):
        if module is None or module in exclude:
            continue
        path = getattr(module, "__file__", None) or ""
        if path.startswith(_TORCH_DIR):
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        if path and not _is_library(path):
            found.extend((module, attr, value) for attr, value in list(namespace.items()) if id(value) in targets
                         and value is targets[id(value)])
        else:
            for name, func in functions.items():
                if namespace.get(name) is func:
                    found.append((module, name, func))
    return found


@contextmanager
def building(fill_uninitialized: bool = True) -> Iterator[Monitor]:
    """Watch a model being built (``make()``): uninitialised allocations are
    NaN and their lines are recorded; nothing else is reported. Pass the
    yielded monitor to ``Monitor.adopt_parameters``."""
    monitor = Monitor(Recorder(), fill_uninitialized=fill_uninitialized)
    monitor.built_at = weakref.WeakKeyDictionary()
    with monitor.active():
        yield monitor


@contextmanager
def watch(raise_on_event: bool = False, regime: Optional[str] = None,
          fill_uninitialized: bool = False) -> Iterator[Recorder]:
    """Record non-finite origins (and the other events) while the block runs::

        with nanlint.watch() as seen:
            loss = model(x).sum()
            loss.backward()
        for event in seen.events:
            print(event.path, event.line, event.kind, event.message)

    With ``raise_on_event=True`` the first event raises ``NonFiniteError``
    naming its source line. With ``fill_uninitialized=True`` uninitialised
    memory is NaN inside the block (deterministic algorithms, warn-only, are
    on until it ends), so parameters never initialised are reported
    (``uninitialized``).
    """
    recorder = Recorder(regime=regime)
    monitor = Monitor(recorder, raise_on_event=raise_on_event, fill_uninitialized=fill_uninitialized)
    with monitor.active():
        yield recorder
