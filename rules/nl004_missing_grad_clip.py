from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple

import libcst as cst

from nanlint.engine import children

from nanlint.finding import HIGH, LOW, UNSAFE
from nanlint.dtypes import fmt
from nanlint.patterns import calls_in_order, snake_words, arg, is_reference
from nanlint.rule import FixSpec, Invalid, Rule, Valid

# GradScaler's default init_scale (2**16): the factor the gradients carry.
LOSS_SCALE = 65536.0


class MissingGradClip(Rule):
    """
    ## What it does
    Flags an optimizer step (`opt.step()`, `scaler.step(opt)`) that follows a
    backward call (`loss.backward()`, `scaler.scale(loss).backward()`,
    `accelerator.backward(loss)`, `fabric.backward(loss)`,
    `torch.autograd.backward(...)`) in the same function, or at module level,
    with no gradient clipping between them on that path. Clipping is any
    call that `nanlint.analysis.safeguards` recognises as one: `clip_grad_norm_`,
    `clip_grad_value_`, `accelerator.clip_grad_norm_`, `fabric.clip_gradients`,
    any call whose name contains `clip` and `grad` or `norm`, a clamp of a
    `.grad`, a call handed a clipping setting (`max_norm=cfg.max_norm`,
    `gradient_clip_val=...`, not `None`/`0`), and a call of a function of this
    file that clips, to any depth (`self._clip()` defined in the class or a
    base class of the file, `clip_all(model)`).

    "On that path" is read from the code's structure: statements run in source
    order, inside loops and `if` blocks too; a branch that ends in `return`,
    `raise`, `continue` or `break` does not reach the step; a loop's body is also
    read as running after itself (a backward at the end of one iteration reaches
    a step at the top of the next). A clip in *one* branch of an `if`
    (`if max_grad_norm > 0: clip_grad_norm_(...)`) counts as clipping: the
    author made clipping configurable on purpose. A backward in a nested
    function (an LBFGS closure) belongs to that function, not to the caller.

    `x.step()` counts as an optimizer step only when `x` looks like one: its
    name contains an `opt`/`optim`/`optimizer` word (`optimizer`, `opt_g`,
    `self.optimizerD`, `optimizers[i]`), or it was assigned from a
    `torch.optim` class or an optimizer factory (`create_optimizer(...)`) in
    the same function; `scaler.step(opt)` counts when the receiver is a
    scaler. `scheduler.step()`, `lr_scheduler.step()`, `env.step(action)` and
    `self.step()` are never steps. An optimizer built with its own clipping
    (`Adafactor`, a `max_grad_norm=`/`clip_*=` argument, a class of this file
    whose `step` clips) is not flagged.

    ## Confidence
    A missing clip is a float16 hazard only where the gradients and weights
    can be float16, so the confidence is what the training code shows (the
    class around the step, else its top-level function, and the module's own
    statements): **high** when a model or tensor is made float16 (`.half()`,
    `torch.float16`) with no GradScaler: float16 weights take the whole
    update; **low** under mixed precision (a GradScaler, a float16
    autocast, a "16-mixed"/`fp16` setting): the scaler skips the steps whose
    gradients overflow and the weights it steps are float32 master weights,
    so only a finite spike large enough to push the next forward's float16
    activations past 65504 turns into inf (every such finding that readers
    judged on real code, 8 in four code bases, was judged false: a missing
    clip there is a training choice, not an inf/NaN source); **low** too
    when nothing shows float16 (a bfloat16 or float32 loop), in a
    benchmark (a file or function named `bench*`/`benchmark*`/`profile*`: a
    name heuristic, since nothing else tells a timing loop from training), or
    when the optimizer stepped is built in this file (in the function, or as
    `self.<attr>` of the class) from an adaptive optimizer: Adam, AdamW,
    RMSprop, Adagrad, Adadelta, Lion, LAMB, LARS/LARC. Those divide the
    update by a running gradient magnitude (or take its sign, or scale it by
    the layer's trust ratio `||w|| / ||g||`), so a single spike moves a
    weight by about the learning rate (Adam: at most about
    lr * (1 - beta1) / sqrt(1 - beta2) = 3.2 lr), not without bound; the
    hazard that remains, a spike past about 8,100 whose square overflows a
    float16 `exp_avg_sq`, freezes that weight rather than making it inf.

    ## Why is this bad?
    Without clipping, a single outlier batch turns into an update of any size.
    In float16 the largest value is 65504: weights or activations pushed that
    far become `inf`, and from then on every loss is NaN. Under mixed precision
    the gradients are multiplied by GradScaler's loss scale (65536 at the
    start); the spikes that overflow 65504 after scaling only make
    `scaler.step` skip the update and halve the scale, but every finite spike
    below that is applied in full. Clipping the unscaled gradient norm bounds
    the step whatever the batch.

    ## Example
    ```python
    scaler.scale(loss).backward()
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
    Unsafe: clipping changes the training dynamics, and `max_norm=1.0` is a
    common default, not a tuned value. The fix inserts
    `torch.nn.utils.clip_grad_norm_(<params>, max_norm=1.0)` on the line before
    the step, where `<params>` is `model.parameters()` when the optimizer was
    built from it in the same function, else the optimizer's own parameters
    (`[p for g in opt.param_groups for p in g["params"]]`). With
    `scaler.step(opt)` it first inserts `scaler.unscale_(opt)` (unless already
    called after the backward: a second `unscale_` raises), since clipping the
    scaled gradients would clip to an effective `max_norm / 65536`. After
    `accelerator.backward(loss)` it inserts `accelerator.clip_grad_norm_(...)`
    and after Lightning's `self.manual_backward(loss)` it inserts
    `self.clip_gradients(opt, ...)`: these frameworks may hold scaled
    gradients and unscale them in their own clipping call. No fix after
    `fabric.backward` (its `clip_gradients` needs the module), when the step is
    not a statement on its own line, when the optimizer is not a plain name or
    attribute, or when a scaled backward is followed by a plain `opt.step()`.
    """

    code = "NL004"
    name = "missing-grad-clip"
    summary = "optimizer step after backward with no gradient clipping: one spike is an unbounded update"
    default_enabled = True
    fix_applicability = UNSAFE
    triggers = ("backward",)
    valid = [
        Valid(
            """
            import torch
            def train(model, loader, optimizer):
                for x, y in loader:
                    loss = model(x, y)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    optimizer.zero_grad()
            """
        ),
        Valid(
            """
            import torch
            def train(model, batch, optimizer, scheduler, max_grad_norm):
                loss = model(batch)
                loss.backward()
                if max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
            """
        ),
        Valid(
            """
            def step(self, batch):
                loss = self.compute(batch)
                loss.backward()
                self.lr_scheduler.step()
                obs = self.env.step(action)
                self.step()
            """
        ),
        Valid(
            """
            def train(model, optimizer, data):
                def closure():
                    optimizer.zero_grad()
                    loss = model(data)
                    loss.backward()
                    return loss
                optimizer.step(closure)
            """
        ),
        Valid(
            """
            import torch
            def clip_all(model):
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            class Base:
                def _clip(self):
                    clip_all(self.model)
            class Trainer(Base):
                def step(self, loss):
                    loss.backward()
                    self._clip()
                    self.optimizer.step()
            """
        ),
        Valid(
            """
            def train(model, loss, optimizer, cfg):
                loss.backward()
                sync_gradients(model, max_norm=cfg.max_norm)
                optimizer.step()
            """
        ),
        Valid(
            """
            def train(accelerator, model, optimizer, loss):
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            """
        ),
    ]
    invalid = [
        Invalid(
            """
            import torch
            def train(model, loader):
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
                for x, y in loader:
                    loss = model(x, y)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
            """,
            fixed="""
            import torch
            def train(model, loader):
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
                for x, y in loader:
                    loss = model(x, y)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                    optimizer.step()
                    optimizer.zero_grad()
            """,
        ),
        Invalid(
            """
            import torch as T
            def train_step(self, loss):
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            """,
            fixed="""
            import torch as T
            def train_step(self, loss):
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                T.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], max_norm=1.0)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            """,
        ),
        Invalid(
            """
            def train(loss, opt_g, opt_d, step, accum):
                loss.backward()
                if (step + 1) % accum == 0:
                    opt_g.step()
                    opt_d.step()
            """,
            fixed="""
            import torch
            def train(loss, opt_g, opt_d, step, accum):
                loss.backward()
                if (step + 1) % accum == 0:
                    torch.nn.utils.clip_grad_norm_([p for g in opt_g.param_groups for p in g["params"]], max_norm=1.0)
                    opt_g.step()
                    torch.nn.utils.clip_grad_norm_([p for g in opt_d.param_groups for p in g["params"]], max_norm=1.0)
                    opt_d.step()
            """,
            count=2,
        ),
        Invalid(
            """
            def train(accelerator, model, batch, optimizer):
                accelerator.backward(model(**batch).loss)
                optimizer.step()
            """,
            fixed="""
            def train(accelerator, model, batch, optimizer):
                accelerator.backward(model(**batch).loss)
                accelerator.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm=1.0)
                optimizer.step()
            """,
        ),
        Invalid(
            """
            def train(loss, optimizers):
                loss.backward(); optimizers[0].step()
            """,
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.off = "backward" not in ctx.source
        # one flag per enclosing function (index 0: module level): saw a backward call
        self.frames: List[bool] = [False]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.frames.append(False)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        seen = self.frames.pop()
        if seen and not self.off:
            self._analyse(_body(node.body))

    def leave_Module(self, node: cst.Module) -> None:
        if self.frames and self.frames[0] and not self.off:
            self._analyse(node.body)

    def visit_Call(self, node: cst.Call) -> None:
        if self.off or self.frames[-1]:
            return
        if _backward(self.ctx, node) is not None:
            self.frames[-1] = True

    # -- the path analysis -------------------------------------------------
    def _analyse(self, body: Sequence[cst.BaseStatement]) -> None:
        flow = _Flow(self.ctx)
        flow.block(body, _State())
        for step, (state, kind, stmt) in flow.found.items():
            self._report(flow, step, state, kind, stmt)

    def _report(self, flow: "_Flow", step: cst.Call, state: "_State", kind: str, stmt: Optional[cst.SimpleStatementLine]) -> None:
        assert state.bw is not None
        dtype = self.ctx.dtype
        backward = _short(self.ctx.code(state.bw))
        step_text = _short(self.ctx.code(step))
        if kind == "scaler" or state.scaled:
            message = (
                f"`{step_text}` after `{backward}` with no gradient clipping in between: the "
                f"gradients carry the loss scale ({fmt(LOSS_SCALE)} at the start); spikes that overflow "
                f"{dtype.name} (max {fmt(dtype.max)}) only skip the step, but every finite spike is "
                f"applied in full; unscale_ then clip_grad_norm_ before the step"
            )
        else:
            message = (
                f"`{step_text}` after `{backward}` with no gradient clipping in between: one outlier "
                f"batch becomes an unbounded update, and {dtype.name} weights or activations pushed "
                f"past {fmt(dtype.max)} turn inf (then every loss is NaN); clip_grad_norm_ before the step"
            )
        safeguards = self.ctx.facts.safeguards
        precision = "mixed" if kind == "scaler" or state.scaled else safeguards.precision(step)
        adaptive = self._adaptive(flow, step, kind)
        if adaptive is not None:
            message += (
                f" (low: `{adaptive}` divides by a gradient magnitude (a running one, or the layer's "
                f"norm), so its step stays about the learning rate whatever the spike)"
            )
        elif precision == "mixed":
            message += (
                " (low: under mixed precision the scaler skips every step whose gradients overflow, and "
                "the weights it steps are float32 master weights: only a finite spike large enough to push "
                "the next forward's float16 activations past 65504 turns into inf)"
            )
        # high only for float16 weights and gradients with no loss-scale guard; low for a timing
        # loop, an adaptive optimizer, mixed precision or nothing that shows float16
        confidence = HIGH if precision == "half" and adaptive is None and not safeguards.benchmark(step) else LOW
        self.report(step, message, self._fix(flow, step, state, kind, stmt), confidence=confidence)

    def _adaptive(self, flow: "_Flow", step: cst.Call, kind: str) -> Optional[str]:
        """The class name of the optimizer stepped, when it is built in this
        file (in the function, or as ``self.<attr>`` of the class) from an
        adaptive optimizer (Adam, AdamW, RMSprop, Adagrad, Lion...)."""
        assert isinstance(step.func, cst.Attribute)
        receiver = step.func.value
        if kind == "scaler":
            first = arg(step, 0, "optimizer")
            if first is None:
                return None
            receiver = first.value
        if not is_reference(receiver):
            return None
        built = flow.bindings.get(self.ctx.code(receiver))
        values = [built] if built is not None else []
        if not values and isinstance(receiver, cst.Attribute):
            values = [v for _, v in self.ctx.facts.scopes.self_attribute(receiver)]
        names = set()
        for value in values:
            if not isinstance(value, cst.Call):
                return None
            _, last = _callee_name(self.ctx, value)
            if last is None or not _ADAPTIVE.search(last):
                return None
            names.add(last)
        return sorted(names)[0] if names else None

    def _fix(self, flow: "_Flow", step: cst.Call, state: "_State", kind: str, stmt: Optional[cst.SimpleStatementLine]) -> Optional[FixSpec]:
        if stmt is None:
            return None
        assert isinstance(step.func, cst.Attribute)
        receiver = step.func.value
        if kind == "scaler":
            first = arg(step, 0, "optimizer")
            if first is None or not is_reference(receiver):
                return None
            opt = first.value
        else:
            if state.scaled:
                return None  # clipping scaled gradients would clip at max_norm / 65536
            opt = receiver
        if not is_reference(opt):
            return None
        opt_text = self.ctx.code(opt)
        params = None
        built = flow.bindings.get(opt_text)
        if isinstance(built, cst.Call):
            p = arg(built, 0, "params")
            if (
                p is not None
                and isinstance(p.value, cst.Call)
                and not p.value.args
                and isinstance(p.value.func, cst.Attribute)
                and p.value.func.attr.value == "parameters"
                and is_reference(p.value.func.value)
            ):
                params = self.ctx.code(p.value)
        if params is None:
            params = f'[p for g in {opt_text}.param_groups for p in g["params"]]'
        lines = []
        imports: Tuple[str, ...] = ()
        if state.via in ("accelerate", "lightning"):
            # the framework may hold scaled gradients: clip through it, it unscales first
            assert isinstance(state.bw.func, cst.Attribute)
            owner = state.bw.func.value
            if not is_reference(owner):
                return None
            if state.via == "accelerate":
                lines.append(f"{self.ctx.code(owner)}.clip_grad_norm_({params}, max_norm=1.0)")
            else:
                lines.append(
                    f'{self.ctx.code(owner)}.clip_gradients({opt_text}, gradient_clip_val=1.0, gradient_clip_algorithm="norm")'
                )
        elif state.via == "fabric":
            return None  # fabric.clip_gradients needs the module, which the step does not name
        else:
            if kind == "scaler" and opt_text not in state.unscaled:
                lines.append(f"{self.ctx.code(receiver)}.unscale_({opt_text})")
            lines.append(f"{self.ctx.torch_name()}.nn.utils.clip_grad_norm_({params}, max_norm=1.0)")
            imports = ("torch",)
        return FixSpec(
            UNSAFE,
            "Clip the gradient norm to 1.0 before the optimizer step"
            + (" (after unscaling)" if kind == "scaler" else ""),
            insert_before=[(stmt, "\n".join(lines))],
            imports=imports,
        )


# -- the state carried along a path ---------------------------------------------


@dataclass(frozen=True)
class _State:
    #: the latest backward call that reaches here unclipped
    bw: Optional[cst.Call] = None
    #: that backward went through a GradScaler (`scaler.scale(loss).backward()`)
    scaled: bool = False
    #: "plain"/"scaled"/"accelerate"/"fabric"/"lightning": who owns the gradients' scaling
    via: str = "plain"
    #: optimizers (as written) already passed to `scaler.unscale_` since that backward
    unscaled: FrozenSet[str] = frozenset()
    #: a clip ran after the last backward on this path
    clipped: bool = False


def _join(states: Sequence[Optional[_State]]) -> Optional[_State]:
    live = [s for s in states if s is not None]
    if not live:
        return None
    if any(s.clipped for s in live):
        return _State(clipped=True)
    for s in live:
        if s.bw is not None:
            return s
    return live[0]


_TERMINATORS = (cst.Return, cst.Raise, cst.Continue, cst.Break)


class _Flow:
    """Walks one function body, statement by statement, along its structure."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.bindings: Dict[str, cst.BaseExpression] = {}
        #: step call -> (state reaching it, "optimizer"/"scaler", its own statement line or None)
        self.found: Dict[cst.Call, Tuple[_State, str, Optional[cst.SimpleStatementLine]]] = {}

    def block(self, stmts: Sequence[cst.CSTNode], state: Optional[_State]) -> Optional[_State]:
        for stmt in stmts:
            if state is None:
                return None  # unreachable code
            state = self.stmt(stmt, state)
        return state

    def stmt(self, node: cst.CSTNode, state: _State) -> Optional[_State]:
        if isinstance(node, cst.SimpleStatementLine):
            own = node if len(node.body) == 1 else None
            return self.smalls(node.body, state, own)
        if isinstance(node, cst.If):
            state = self.events(node.test, state, None)
            branches = [self.suite(node.body, state)]
            if isinstance(node.orelse, cst.If):
                branches.append(self.stmt(node.orelse, state))
            elif isinstance(node.orelse, cst.Else):
                branches.append(self.suite(node.orelse.body, state))
            else:
                branches.append(state)
            return _join(branches)
        if isinstance(node, (cst.For, cst.While)):
            head = node.iter if isinstance(node, cst.For) else node.test
            state = self.events(head, state, None)
            first = self.suite(node.body, state)
            again = self.suite(node.body, _join([state, first]))  # the back edge
            after = _join([state, first, again])
            if node.orelse is not None and after is not None:
                after = self.suite(node.orelse.body, after)
            return after
        if isinstance(node, (cst.Try, cst.TryStar)):
            body = self.suite(node.body, state)
            if node.orelse is not None and body is not None:
                body = self.suite(node.orelse.body, body)
            ends = [body] + [self.suite(h.body, state) for h in node.handlers]
            joined = _join(ends)
            if node.finalbody is not None and joined is not None:
                return self.suite(node.finalbody.body, joined)
            return joined
        if isinstance(node, cst.With):
            for item in node.items:
                state = self.events(item.item, state, None)
            return self.suite(node.body, state)
        if isinstance(node, cst.Match):
            state = self.events(node.subject, state, None)
            return _join([state] + [self.suite(c.body, state) for c in node.cases])
        return state  # FunctionDef / ClassDef: their own scopes

    def suite(self, body: cst.BaseSuite, state: Optional[_State]) -> Optional[_State]:
        if state is None:
            return None
        if isinstance(body, cst.SimpleStatementSuite):
            return self.smalls(body.body, state, None)
        return self.block(body.body, state)

    def smalls(self, smalls: Sequence[cst.BaseSmallStatement], state: _State,
               own: Optional[cst.SimpleStatementLine]) -> Optional[_State]:
        for small in smalls:
            line = own if own is not None and isinstance(small, cst.Expr) else None
            state = self.events(small, state, line)
            if isinstance(small, cst.Assign) and len(small.targets) == 1:
                self._bind(small.targets[0].target, small.value)
            elif isinstance(small, cst.AnnAssign) and small.value is not None:
                self._bind(small.target, small.value)
            if isinstance(small, _TERMINATORS):
                return None
        return state

    def _bind(self, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        if is_reference(target):
            self.bindings[self.ctx.code(target)] = value

    def events(self, node: cst.CSTNode, state: _State, line: Optional[cst.SimpleStatementLine]) -> _State:
        for call in calls_in_order(node):
            state = self.call(call, state, line if _is_whole(line, call) else None)
        return state

    def call(self, call: cst.Call, state: _State, line: Optional[cst.SimpleStatementLine]) -> _State:
        backward = _backward(self.ctx, call)
        if backward is not None:
            return _State(bw=call, scaled=backward == "scaled", via=backward)
        if self.ctx.facts.safeguards.clips_call(call):
            if state.bw is not None:
                return _State(clipped=True)
            return state
        if not isinstance(call.func, cst.Attribute):
            return state
        method = call.func.attr.value
        if method == "unscale_" and state.bw is not None:
            first = arg(call, 0, "optimizer")
            if first is not None and is_reference(first.value):
                return _State(state.bw, state.scaled, state.via, state.unscaled | {self.ctx.code(first.value)}, False)
            return state
        if method == "step" and state.bw is not None:
            kind = self._step_kind(call)
            if kind is not None:
                self.found[call] = (state, kind, line)
        return state

    def _step_kind(self, call: cst.Call) -> Optional[str]:
        assert isinstance(call.func, cst.Attribute)
        receiver = call.func.value
        if self.ctx.names.is_module_like(receiver):
            return None
        name = _last_name(receiver)
        if name is None:
            return None
        words = snake_words(name)
        tokens = words.split("_")
        if any(t in ("sched", "scheduler", "schedulers", "lr") for t in tokens):
            return None
        built = self.bindings.get(self.ctx.code(receiver)) if is_reference(receiver) else None
        if any(t.endswith("scaler") for t in tokens) or _is_scaler_factory(self.ctx, built):
            return "scaler" if arg(call, 0, "optimizer") is not None else None
        if _OPT_RE.search(words) or _is_optimizer_factory(self.ctx, built):
            if _self_clipping(self.ctx, built) or self.ctx.facts.safeguards.optimizer_clips(built):
                return None
            return "optimizer"
        return None


# -- what a call is ------------------------------------------------------------------

#: optimizers whose update divides by a running gradient magnitude (or takes its
#: sign): one spike cannot make the step much larger than the learning rate
_ADAPTIVE = re.compile(r"adam|rmsprop|adagrad|adadelta|lion|lamb(?!da)|sophia|lars|larc", re.IGNORECASE)

_OPT_RE = re.compile(r"(?:^|_)(?:opt|optim|optimizer|optimiser)s?(?:_|\d|$)")


def _last_name(node: cst.BaseExpression) -> Optional[str]:
    """The name that says what an expression is: `self.optimizer` -> optimizer,
    `optimizers[0]` -> optimizers, `self.optimizers()` -> optimizers."""
    for _ in range(4):
        if isinstance(node, cst.Subscript):
            node = node.value
        elif isinstance(node, cst.Call):
            node = node.func
        else:
            break
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return None


def _backward(ctx, call: cst.Call) -> Optional[str]:
    """How the call runs a backward pass ("plain", "scaled" through a GradScaler,
    "accelerate", "fabric", "lightning"), or None when it is not one."""
    func = call.func
    qualified = ctx.names.resolve(func)
    if qualified is not None:
        if qualified.startswith("torch.") and qualified.endswith("autograd.backward"):
            return "plain"
        if qualified.startswith("torch.distributed.autograd.backward"):
            return "plain"
        return None
    if not isinstance(func, cst.Attribute):
        return None
    method = func.attr.value
    if method not in ("backward", "manual_backward"):
        return None
    receiver = func.value
    if isinstance(receiver, cst.Call) and isinstance(receiver.func, cst.Name) and receiver.func.value == "super":
        return None  # an autograd.Function delegating to its parent
    if (
        isinstance(receiver, cst.Call)
        and isinstance(receiver.func, cst.Attribute)
        and receiver.func.attr.value == "scale"
        and "scaler" in snake_words(_last_name(receiver.func.value) or "")
    ):
        return "scaled"
    if call.args:
        tokens = snake_words(_last_name(receiver) or "").split("_")
        if "accelerator" in tokens:
            return "accelerate"
        if "fabric" in tokens:
            return "fabric"
    if method == "manual_backward":
        return "lightning"
    return "plain"


def _callee_name(ctx, call: cst.Call) -> Tuple[Optional[str], Optional[str]]:
    """(qualified name or None, last name) of a call's function."""
    qualified = ctx.names.resolve(call.func)
    return qualified, _last_name(call.func)


_NOT_OPTIMIZERS = ("lr_scheduler", "swa_utils", "scheduler", "sched")


def _is_optimizer_factory(ctx, value: Optional[cst.BaseExpression]) -> bool:
    if not isinstance(value, cst.Call):
        return False
    qualified, last = _callee_name(ctx, value)
    if last is None:
        return False
    if any(bad in (qualified or last).lower() for bad in _NOT_OPTIMIZERS) or last.endswith("LR"):
        return False
    if qualified is not None:
        module = qualified.rpartition(".")[0].lower()
        return "optim" in module
    return "optim" in last.lower()  # create_optimizer(...), build_optimizer(...)


def _is_scaler_factory(ctx, value: Optional[cst.BaseExpression]) -> bool:
    if not isinstance(value, cst.Call):
        return False
    _, last = _callee_name(ctx, value)
    return last is not None and last.endswith("GradScaler")


def _self_clipping(ctx, value: Optional[cst.BaseExpression]) -> bool:
    """Optimizers that clip by themselves: Adafactor (update clipping at
    clip_threshold=1.0), or any built with a clipping argument."""
    if not isinstance(value, cst.Call):
        return False
    _, last = _callee_name(ctx, value)
    if last is not None and "adafactor" in last.lower():
        return True
    return any(
        a.keyword is not None and ("clip" in a.keyword.value.lower() or "max_grad_norm" in a.keyword.value)
        for a in value.args
    )


# -- small helpers -----------------------------------------------------------------------




def _is_whole(line: Optional[cst.SimpleStatementLine], call: cst.Call) -> bool:
    """The call is the whole of its own statement line."""
    if line is None:
        return False
    small = line.body[0]
    return isinstance(small, cst.Expr) and small.value is call


def _body(suite: cst.BaseSuite) -> Sequence[cst.CSTNode]:
    if isinstance(suite, cst.IndentedBlock):
        return suite.body
    if isinstance(suite, cst.SimpleStatementSuite):
        return [cst.SimpleStatementLine(body=suite.body)]
    return ()


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


