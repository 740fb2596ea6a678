from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple

import libcst as cst

from nanlint.dtypes import fmt
from nanlint.engine import children
from nanlint.finding import SAFE
from nanlint.patterns import calls_in_order, snake_words, arg, is_reference, number
from nanlint.rule import FixSpec, Invalid, Rule, Valid

# GradScaler's default init_scale (2**16): the factor the gradients carry after
# `scaler.scale(loss).backward()` until `unscale_` divides it out.
LOSS_SCALE = 65536.0

_CLIPS = {
    "clip_grad_norm_": "max_norm",
    "clip_grad_norm": "max_norm",
    "clip_grad_value_": "clip_value",
    "clip_grad_value": "clip_value",
}


class ClipBeforeUnscale(Rule):
    """
    ## What it does
    Flags `torch.nn.utils.clip_grad_norm_` / `clip_grad_value_` (under any
    import alias: `nn.utils.clip_grad_norm_`, `from torch.nn.utils import
    clip_grad_norm_`) called after `scaler.scale(loss).backward()` in the same
    function (or at module level) with no `scaler.unscale_(...)` between them
    on that path. `scaler` is any name or attribute bound to a `GradScaler`
    (`torch.cuda.amp.GradScaler()`, `torch.amp.GradScaler("cuda")`,
    `ShardedGradScaler`), named like one (`scaler`, `grad_scaler`,
    `self.amp_scaler`), or used as `scaler.step(opt)` in the same function.

    Paths follow the code's structure: statements in source order, a loop
    body also after itself, a branch ending in `return`/`raise`/`continue`/
    `break` reaching nothing after it. An `unscale_` in *one* branch of an
    `if` counts (AMP is often optional: `if use_amp: scaler.unscale_(opt)`),
    and so does any call whose name contains `unscale`, whatever its
    receiver. `scaler.step(opt)` unscales by itself, so a clip after it is
    not flagged. Framework clipping (`accelerator.clip_grad_norm_`,
    `fabric.clip_gradients`, Lightning's `self.clip_gradients`) unscales
    first and is never flagged, nor is a scaler built with `enabled=False`.

    ## Why is this bad?
    `scaler.scale(loss)` multiplies the loss, hence every gradient, by the loss
    scale (65536 at the start, then adapted) so that small float16 gradients
    do not flush to zero (float16's smallest subnormal is 5.96e-8). Until
    `scaler.unscale_(optimizer)` divides it out, `.grad` holds the scaled
    values: `clip_grad_norm_(params, max_norm=1.0)` then clips the true
    gradients to an effective norm of 1/65536 = 1.53e-5, so training silently
    crawls (no NaN, no error), and `clip_grad_value_` clips each true
    gradient component to clip_value/65536. `nanlint confirm` reports a
    clip-before-unscale event at the clip call.

    ## Example
    ```python
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    scaler.step(optimizer)
    scaler.update()
    ```

    ## Use instead
    ```python
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    scaler.step(optimizer)
    scaler.update()
    ```

    ## Fix safety
    Safe: the fix inserts `scaler.unscale_(opt)` on the line before the clip
    statement, which is what the PyTorch AMP recipe prescribes; the clip then
    sees the true gradients and `scaler.step(opt)` does not unscale a second
    time. It is offered only when the optimizer is known: `scaler.step(opt)`
    with one and the same optimizer (a plain name or attribute) everywhere in
    the function, called later in the same block as the clip, or after the
    `if`/`with` block holding it, with no jump, backward or other step in
    between (so every inserted `unscale_` is followed by that step and its
    `update`: a second `unscale_` before `update` raises; a clip inside a
    `try` or a loop that the step is outside of gets no fix). When several
    clips follow one backward, only the first gets the fix.
    """

    code = "NL106"
    name = "clip-before-unscale"
    summary = "gradient clipping before scaler.unscale_ clips GradScaler-scaled gradients (max_norm / 65536)"
    fix_applicability = SAFE
    triggers = (re.compile(r"clip_grad_(?:norm|value)"),)
    valid = [
        Valid(
            """
            import torch
            def train(model, loss, optimizer, scaler):
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
            """
        ),
        Valid(
            """
            import torch
            def train(model, loss, optimizer, scaler, use_amp):
                if use_amp:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            """
        ),
        Valid(
            """
            def train(accelerator, model, loss, optimizer, scaler):
                scaler.scale(loss).backward()
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
            """
        ),
        Valid(
            """
            import torch
            def train(model, loss, optimizer):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            """
        ),
        Valid(
            """
            import torch
            from torch.cuda.amp import GradScaler
            def train(model, loss, optimizer):
                scaler = GradScaler(enabled=False)
                scaler.scale(loss).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
            """
        ),
    ]
    invalid = [
        Invalid(
            """
            import torch
            def train(model, loss, optimizer, scaler):
                scaler.scale(loss).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
            """,
            fixed="""
            import torch
            def train(model, loss, optimizer, scaler):
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
            """,
        ),
        Invalid(
            """
            from torch import nn
            class Trainer:
                def step(self, loss):
                    self.amp.scale(loss).backward()
                    norm = nn.utils.clip_grad_value_(self.model.parameters(), clip_value=0.5)
                    self.amp.step(self.opt)
                    self.amp.update()
                    return norm
            """,
            fixed="""
            from torch import nn
            class Trainer:
                def step(self, loss):
                    self.amp.scale(loss).backward()
                    self.amp.unscale_(self.opt)
                    norm = nn.utils.clip_grad_value_(self.model.parameters(), clip_value=0.5)
                    self.amp.step(self.opt)
                    self.amp.update()
                    return norm
            """,
        ),
        Invalid(
            """
            from torch.nn.utils import clip_grad_norm_
            def train(enc, dec, loss, opt, scaler):
                scaler.scale(loss).backward()
                clip_grad_norm_(enc.parameters(), 1.0)
                clip_grad_norm_(dec.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
            """,
            fixed="""
            from torch.nn.utils import clip_grad_norm_
            def train(enc, dec, loss, opt, scaler):
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                clip_grad_norm_(enc.parameters(), 1.0)
                clip_grad_norm_(dec.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
            """,
            count=2,
        ),
        Invalid(
            """
            import torch
            def train(model, batches, opt, scaler):
                for loss in batches:
                    scaler.scale(loss).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                if ready:
                    scaler.step(opt)
            """,
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.frames: List[_Frame] = [_Frame()]
        #: `self.scaler = GradScaler()` anywhere in the file (attribute text)
        self.file_scalers: Set[str] = set()
        self.file_disabled: Set[str] = set()

    # -- collecting ------------------------------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.frames.append(_Frame())

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        frame = self.frames.pop()
        if frame.scaled and isinstance(node.body, cst.IndentedBlock):
            self._analyse(node.body.body, frame)

    def leave_Module(self, node: cst.Module) -> None:
        frame = self.frames[0]
        if frame.scaled:
            self._analyse(node.body, frame)

    def visit_Assign(self, node: cst.Assign) -> None:
        value = node.value
        if not (isinstance(value, cst.Call) and _callee_last(value.func, "GradScaler")):
            return
        enabled = arg(value, None, "enabled")
        disabled = enabled is not None and isinstance(enabled.value, cst.Name) and enabled.value.value == "False"
        for target in node.targets:
            if is_reference(target.target):
                text = self.ctx.code(target.target)
                frame = self.frames[-1]
                (frame.disabled if disabled else frame.scalers).add(text)
                if text.startswith("self."):
                    (self.file_disabled if disabled else self.file_scalers).add(text)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute):
            return
        frame = self.frames[-1]
        if func.attr.value == "backward" and _scaled_receiver(node) is not None:
            frame.scaled = True
        elif func.attr.value == "step" and is_reference(func.value):
            first = arg(node, 0, "optimizer")
            if first is not None:
                frame.steps.setdefault(self.ctx.code(func.value), []).append(first.value)

    # -- the path analysis ---------------------------------------------------------
    def _analyse(self, body: Sequence[cst.CSTNode], frame: "_Frame") -> None:
        flow = _Flow(self, frame)
        flow.block(body, _State())
        for clip, (scaler, backward, fixable, stmt, levels) in flow.found.items():
            self._report(frame, clip, scaler, backward, fixable, stmt, levels)

    def is_scaler(self, text: str, frame: "_Frame") -> bool:
        if text in frame.disabled or (text in self.file_disabled and text not in frame.scalers):
            return False
        last = text.rsplit(".", 1)[-1]
        return (
            "scaler" in snake_words(last)
            or text in frame.scalers
            or text in self.file_scalers
            or text in frame.steps
        )

    def _report(self, frame, clip: cst.Call, scaler: str, backward: cst.Call, fixable: bool,
                stmt: Optional[cst.SimpleStatementLine], levels: Tuple["_Level", ...]) -> None:
        name = _clip_name(self.ctx, clip) or "clip_grad_norm_"
        keyword = _CLIPS.get(name, "max_norm")
        bound = arg(clip, 1, keyword)
        value = number(bound.value) if bound is not None else None
        if value is not None:
            effect = f"{keyword}={fmt(value)} acts as {fmt(value)}/{fmt(LOSS_SCALE)} = {fmt(value / LOSS_SCALE)}"
        else:
            effect = f"{keyword} acts as {keyword}/{fmt(LOSS_SCALE)}"
        message = (
            f"`{name}` after `{scaler}.scale(...).backward()` with no `{scaler}.unscale_(optimizer)` in "
            f"between: the gradients still carry the loss scale ({fmt(LOSS_SCALE)} at the start), so "
            f"{effect} on the true gradients; call `{scaler}.unscale_(optimizer)` before clipping"
        )
        self.report(clip, message, self._fix(frame, scaler, fixable, stmt, levels))

    def _fix(self, frame, scaler: str, fixable: bool, stmt: Optional[cst.SimpleStatementLine],
             levels: Tuple["_Level", ...]) -> Optional[FixSpec]:
        if not fixable or stmt is None:
            return None
        opts = {self.ctx.code(o) for o in frame.steps.get(scaler, []) if is_reference(o)}
        if len(opts) != 1 or len(frame.steps.get(scaler, [])) != len(
            [o for o in frame.steps.get(scaler, []) if is_reference(o)]
        ):
            return None
        opt = next(iter(opts))
        if not _step_follows(self.ctx, levels, scaler):
            return None
        return FixSpec(
            SAFE,
            f"Unscale the gradients (`{scaler}.unscale_({opt})`) before clipping them",
            insert_before=[(stmt, f"{scaler}.unscale_({opt})")],
        )


# -- the per-function facts collected while visiting --------------------------------


@dataclass
class _Frame:
    scaled: bool = False
    scalers: Set[str] = field(default_factory=set)
    disabled: Set[str] = field(default_factory=set)
    #: scaler text -> the optimizers passed to its `step`
    steps: Dict[str, List[cst.BaseExpression]] = field(default_factory=dict)


@dataclass(frozen=True)
class _State:
    #: scaler text -> the scaled backward call not yet unscaled on this path
    pending: Tuple[Tuple[str, cst.Call], ...] = ()
    #: scalers unscaled somewhere on this path (an unscale in one branch counts)
    unscaled: FrozenSet[str] = frozenset()
    #: scalers for which a fix (an inserted unscale_) was already offered on this path
    offered: FrozenSet[str] = frozenset()

    def with_backward(self, scaler: str, call: cst.Call) -> "_State":
        pending = tuple(p for p in self.pending if p[0] != scaler) + ((scaler, call),)
        return _State(pending, self.unscaled - {scaler}, self.offered - {scaler})

    def without(self, scalers: Optional[Set[str]] = None) -> "_State":
        """Unscaled: the named scalers, or every pending one."""
        gone = {p[0] for p in self.pending} if scalers is None else scalers
        pending = tuple(p for p in self.pending if p[0] not in gone)
        return _State(pending, self.unscaled | gone, self.offered)


def _join(states: Sequence[Optional[_State]]) -> Optional[_State]:
    live = [s for s in states if s is not None]
    if not live:
        return None
    unscaled: Set[str] = set()
    offered: Set[str] = set()
    for s in live:
        unscaled |= s.unscaled
        offered |= s.offered
    pending: Dict[str, cst.Call] = {}
    for s in live:
        for scaler, call in s.pending:
            if scaler not in unscaled:
                pending.setdefault(scaler, call)
    return _State(tuple(pending.items()), frozenset(unscaled), frozenset(offered))


_TERMINATORS = (cst.Return, cst.Raise, cst.Continue, cst.Break)


class _Flow:
    def __init__(self, rule: ClipBeforeUnscale, frame: _Frame) -> None:
        self.rule = rule
        self.ctx = rule.ctx
        self.frame = frame
        #: clip call -> (scaler, backward, fix may be offered, own statement, enclosing blocks)
        self.found: Dict[cst.Call, Tuple[str, cst.Call, bool, Optional[cst.SimpleStatementLine], Tuple["_Level", ...]]] = {}
        #: the blocks being walked, outermost first
        self.levels: List[_Level] = []
        #: the kind of the block the next `suite` walks: "if"/"with" blocks pass control on
        #: to the statement after them, loops and try bodies may not
        self.kind = "body"

    def block(self, stmts: Sequence[cst.CSTNode], state: Optional[_State]) -> Optional[_State]:
        level = _Level(stmts, -1, self.kind)
        self.levels.append(level)
        try:
            for index, stmt in enumerate(stmts):
                if state is None:
                    return None
                level.index = index
                self.kind = "body"
                state = self.stmt(stmt, state)
            return state
        finally:
            self.levels.pop()

    def suite(self, body: cst.BaseSuite, state: Optional[_State], kind: str = "body") -> Optional[_State]:
        if state is None:
            return None
        if isinstance(body, cst.SimpleStatementSuite):
            return self.smalls(body.body, state, None)
        self.kind = kind
        return self.block(body.body, state)

    def stmt(self, node: cst.CSTNode, state: _State) -> Optional[_State]:
        if isinstance(node, cst.SimpleStatementLine):
            own = node if len(node.body) == 1 else None
            return self.smalls(node.body, state, own)
        if isinstance(node, cst.If):
            state = self.events(node.test, state, None)
            branches = [self.suite(node.body, state, "if")]
            if isinstance(node.orelse, cst.If):
                branches.append(self.stmt(node.orelse, state))
            elif isinstance(node.orelse, cst.Else):
                branches.append(self.suite(node.orelse.body, state, "if"))
            else:
                branches.append(state)
            return _join(branches)
        if isinstance(node, (cst.For, cst.While)):
            head = node.iter if isinstance(node, cst.For) else node.test
            state = self.events(head, state, None)
            first = self.suite(node.body, state)
            again = self.suite(node.body, _join([state, first]))
            after = _join([state, first, again])
            if node.orelse is not None and after is not None:
                after = self.suite(node.orelse.body, after)
            return after
        if isinstance(node, (cst.Try, cst.TryStar)):
            body = self.suite(node.body, state)
            if node.orelse is not None and body is not None:
                body = self.suite(node.orelse.body, body)
            joined = _join([body] + [self.suite(h.body, state) for h in node.handlers])
            if node.finalbody is not None and joined is not None:
                return self.suite(node.finalbody.body, joined)
            return joined
        if isinstance(node, cst.With):
            for item in node.items:
                state = self.events(item.item, state, None)
            return self.suite(node.body, state, "with")
        if isinstance(node, cst.Match):
            state = self.events(node.subject, state, None)
            return _join([state] + [self.suite(c.body, state) for c in node.cases])
        return state  # nested FunctionDef / ClassDef: their own scopes

    def smalls(self, smalls: Sequence[cst.BaseSmallStatement], state: _State,
               own: Optional[cst.SimpleStatementLine]) -> Optional[_State]:
        where = tuple(_Level(l.stmts, l.index, l.kind) for l in self.levels) if own is not None else ()
        for small in smalls:
            state = self.events(small, state, own, where)
            if isinstance(small, _TERMINATORS):
                return None
        return state

    def events(self, node: cst.CSTNode, state: _State, own: Optional[cst.SimpleStatementLine],
               where: Tuple["_Level", ...] = ()) -> _State:
        for call in calls_in_order(node):
            state = self.call(call, state, own, where)
        return state

    def call(self, call: cst.Call, state: _State, own: Optional[cst.SimpleStatementLine],
             where: Tuple["_Level", ...]) -> _State:
        func = call.func
        name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
        if "unscale" in name:
            receiver = func.value if isinstance(func, cst.Attribute) else None
            if name == "unscale_" and receiver is not None and is_reference(receiver):
                text = self.ctx.code(receiver)
                if any(p[0] == text for p in state.pending):
                    return state.without({text})
            return state.without()  # some other unscaling helper: trust it
        if name == "backward" and isinstance(func, cst.Attribute):
            scaler = _scaled_receiver(call)
            if scaler is not None and is_reference(scaler):
                text = self.ctx.code(scaler)
                if self.rule.is_scaler(text, self.frame):
                    return state.with_backward(text, call)
            return state
        if name == "step" and isinstance(func, cst.Attribute) and is_reference(func.value):
            text = self.ctx.code(func.value)
            if any(p[0] == text for p in state.pending):
                return state.without({text})  # GradScaler.step unscales first
            return state
        if state.pending and _clip_name(self.ctx, call) is not None:
            scaler, backward = state.pending[-1]
            fixable = len(state.pending) == 1 and scaler not in state.offered
            if call not in self.found:
                stmt = own if own is not None and _contains(own, call) else None
                self.found[call] = (scaler, backward, fixable, stmt, where)
            return _State(state.pending, state.unscaled, state.offered | {scaler})
        return state


# -- helpers ------------------------------------------------------------------------------


def _scaled_receiver(call: cst.Call) -> Optional[cst.BaseExpression]:
    """`X` in `X.scale(loss).backward()`."""
    func = call.func
    if not isinstance(func, cst.Attribute):
        return None
    inner = func.value
    if (
        isinstance(inner, cst.Call)
        and isinstance(inner.func, cst.Attribute)
        and inner.func.attr.value == "scale"
        and len(inner.args) >= 1
    ):
        return inner.func.value
    return None


def _clip_name(ctx, call: cst.Call) -> Optional[str]:
    """`clip_grad_norm_` for torch.nn.utils' clipping functions under any alias."""
    qualified = ctx.resolve(call.func)
    if qualified is None or not qualified.startswith("torch.nn.utils."):
        return None
    last = qualified.rsplit(".", 1)[-1]
    return last if last in _CLIPS else None


def _callee_last(func: cst.BaseExpression, suffix: str) -> bool:
    if isinstance(func, cst.Name):
        return func.value.endswith(suffix)
    if isinstance(func, cst.Attribute):
        return func.attr.value.endswith(suffix)
    return False


@dataclass
class _Level:
    stmts: Sequence[cst.CSTNode]
    index: int
    kind: str  # "body" (function, loop, try...), "if", "with"


def _step_follows(ctx, levels: Tuple[_Level, ...], scaler: str) -> bool:
    """`scaler.step(opt)` is a later statement of the clip's block, or of an enclosing
    block after the `if`/`with` holding the clip, with no backward, unscale_, other
    step or jump before it."""
    for level in reversed(levels):
        found = _step_in(ctx, level.stmts[level.index + 1:], scaler)
        if found is not None:
            return found
        if level.kind not in ("if", "with"):
            return False
    return False


def _step_in(ctx, stmts: Sequence[cst.CSTNode], scaler: str) -> Optional[bool]:
    """True: the step comes; False: something else comes first; None: neither."""
    for stmt in stmts:
        if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Expr):
            value = stmt.body[0].value
            if (
                isinstance(value, cst.Call)
                and isinstance(value.func, cst.Attribute)
                and value.func.attr.value == "step"
                and is_reference(value.func.value)
                and ctx.code(value.func.value) == scaler
            ):
                return True
        if not isinstance(stmt, cst.SimpleStatementLine):
            return False
        for small in stmt.body:
            if isinstance(small, _TERMINATORS):
                return False
        for call in calls_in_order(stmt):
            if isinstance(call.func, cst.Attribute) and call.func.attr.value in ("backward", "unscale_", "step"):
                return False
    return None


def _contains(root: cst.CSTNode, target: cst.CSTNode) -> bool:
    stack = [root]
    while stack:
        n = stack.pop()
        if n is target:
            return True
        stack.extend(children(n))
    return False


