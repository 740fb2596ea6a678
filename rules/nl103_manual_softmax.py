from __future__ import annotations

import re
from typing import Optional, Tuple

import libcst as cst

from nanlint.dtypes import fmt
from nanlint.finding import SAFE
from nanlint.patterns import is_upcast, arg, bounded_above, is_method_call, number, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid
from nanlint.probabilities import LocalValues, TracksLocals, log_call_operand

# reshapes and guards around a denominator that keep it "the sum of the exps"
_DENOM_WRAPPERS = frozenset(
    {"unsqueeze", "view", "reshape", "expand", "expand_as", "view_as", "clamp", "clamp_min", "clip",
     "to", "type_as", "squeeze"}
)
# tensor methods that only read their receiver: safe to evaluate once instead of twice
_PURE_METHODS = frozenset(
    {"transpose", "t", "view", "reshape", "unsqueeze", "squeeze", "permute", "contiguous", "flatten",
     "view_as", "reshape_as", "expand", "expand_as", "mT", "T"}
)
_SPACES = re.compile(r"\s+")


def _text(ctx, node: cst.BaseExpression) -> str:
    return _SPACES.sub("", ctx.code(node.with_changes(lpar=[], rpar=[])))


def _exp_arg(ctx, node: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """x for ``torch.exp(x)`` / ``x.exp()`` / ``exp(x)`` (from torch import exp)."""
    if not isinstance(node, cst.Call) or torch_op(ctx, node) != "exp":
        return None
    if is_method_call(ctx, node):
        return None if node.args else node.func.value  # type: ignore[union-attr]
    if len(node.args) != 1 or node.args[0].keyword is not None or node.args[0].star:
        return None
    return node.args[0].value


def _bounded(ctx, x: cst.BaseExpression, values: LocalValues) -> bool:
    """patterns.bounded_above, also looking through an index or a reshape of
    the subtracted max (``x - m[:, None]``, ``x - m.unsqueeze(-1)``)."""
    if bounded_above(ctx, x, values) or ctx.facts.bounded_above(x):  # type: ignore[arg-type]
        return True  # the rule's own names, or the shared analysis (``m, _ = x.max(dim)``)
    if isinstance(x, cst.BinaryOperation) and isinstance(x.operator, cst.Subtract):
        right = x.right
        for _ in range(4):
            if isinstance(right, cst.Subscript):
                right = right.value
            elif (
                isinstance(right, cst.Call)
                and isinstance(right.func, cst.Attribute)
                and right.func.attr.value in _DENOM_WRAPPERS
                and ctx.resolve(right.func) is None
            ):
                right = right.func.value
            else:
                break
        if right is not x.right:
            return bounded_above(ctx, x.with_changes(right=right), values)  # type: ignore[arg-type]
    return False


def _pure(ctx, node: cst.BaseExpression, depth: int = 0) -> bool:
    """Reading the expression twice is the same as reading it once (names,
    attributes, literal arithmetic, indexing, reshapes)."""
    if depth > 20:
        return False
    rec = lambda n: _pure(ctx, n, depth + 1)  # noqa: E731
    if isinstance(node, (cst.Name, cst.Integer, cst.Float)):
        return True
    if isinstance(node, cst.Attribute):
        return rec(node.value)
    if isinstance(node, cst.UnaryOperation):
        return rec(node.expression)
    if isinstance(node, cst.BinaryOperation):
        return rec(node.left) and rec(node.right)
    if isinstance(node, cst.Subscript):
        if not rec(node.value):
            return False
        for el in node.slice:
            sl = el.slice
            if isinstance(sl, cst.Index):
                if not rec(sl.value):
                    return False
            elif isinstance(sl, cst.Slice):
                for part in (sl.lower, sl.upper, sl.step):
                    if part is not None and not rec(part):
                        return False
        return True
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        if node.func.attr.value in _PURE_METHODS and ctx.resolve(node.func) is None:
            return rec(node.func.value) and all(rec(a.value) for a in node.args)
    return False


class ManualSoftmax(TracksLocals, Rule):
    """
    ## What it does
    Flags a softmax or a log-sum-exp written by hand with an unstabilised
    exp: `torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)`,
    `e = x.exp(); e / e.sum(-1, keepdim=True)` (also `e /= e.sum(...)`),
    and `torch.log(torch.exp(x).sum(dim))`. The finding is on the division,
    or on the log. It is medium in a project that casts nothing to half (no
    `.half()`, `torch_dtype=torch.float16`, DeepSpeed `"fp16"` config...):
    CUDA/MPS autocast computes `exp` and `sum` in float32, so only a model
    run in pure half overflows.

    ## Why is this bad?
    `exp(x)` is inf in float16 for every x >= 11.09 (the largest float16 is
    65504; bfloat16 overflows above 88.7), and a score, a logit or an energy
    above 11 is ordinary. The row then holds inf / inf = NaN: a manual
    softmax is already NaN at x = 20 where `torch.softmax` is fine, and
    `log(exp(x).sum())` is inf where `torch.logsumexp` is exact. Both
    library functions subtract the maximum before exponentiating.
    `nanlint confirm` proves it with a new-inf event (the exp overflows) or a
    new-nan event (inf / inf) at the line.

    Not flagged: stabilised forms (`exp(x - x.max(dim, keepdim=True).values)`,
    `exp(x - torch.logsumexp(...))`, a clamped or otherwise bounded argument),
    and an exp of an explicitly upcast argument (`x.float().exp()`) or of a
    tensor that is float32 by construction (`torch.linspace(-eta, 0, n)`, a
    factory without `dtype=`, makes the default dtype). The exp
    itself is NL002's finding (float16 only); this rule names the
    replacement, which exists here.

    ## Example
    ```python
    attn = torch.exp(scores) / torch.exp(scores).sum(dim=-1, keepdim=True)
    lse = torch.log(torch.exp(energies).sum(dim=1))
    ```

    ## Use instead
    ```python
    attn = torch.softmax(scores, dim=-1)
    lse = torch.logsumexp(energies, dim=1)
    ```

    ## Fix safety
    Safe: softmax and logsumexp are the same functions, computed without
    overflow, in the same dtype. The softmax fix is offered only when the
    reduction `dim` is explicit (a single dimension) with `keepdim=True`, so
    the denominator broadcasts along that dimension exactly like softmax's,
    and the exp arguments of numerator and denominator are the same
    side-effect-free expression (a call that could differ between two
    evaluations, such as a module with dropout, is not merged into one); not
    through a variable, which other code may use. The logsumexp fix needs an
    explicit `dim` (its `keepdim` is kept).
    """

    code = "NL103"
    name = "manual-softmax"
    summary = "exp(x) / exp(x).sum() and log(exp(x).sum()) overflow to NaN/inf; use torch.softmax / torch.logsumexp"
    fix_applicability = SAFE
    triggers = (re.compile(r"\bexp\b"),)
    valid = [
        Valid("import torch\nattn = torch.softmax(scores, dim=-1)\n"),
        # botorch's window weights: linspace makes float32 (and the argument is <= 0)
        Valid("import torch\nw = torch.exp(torch.linspace(-eta, 0, n))\nw = w / w.sum()\n"),
        Valid(
            "import torch\ne = torch.exp(x - x.max(dim=-1, keepdim=True).values)\n"
            "p = e / e.sum(dim=-1, keepdim=True)\n"
        ),
        Valid("import torch\nm = x.amax(-1)\nlse = torch.log(torch.exp(x - m[:, None]).sum(-1)) + m\n"),
        Valid("import torch\ny = torch.logsumexp(x, dim=1)\n"),
        Valid("import torch\ne = x.float().exp()\np = e / e.sum(-1, keepdim=True)\n"),
        Valid("import torch\ny = torch.exp(x) / n\n"),
        Valid("import numpy as np\np = np.exp(x) / np.exp(x).sum()\n"),
        Valid("import torch\ne = torch.exp(x)\ne = e.clamp(max=1e4)\np = e / e.sum(-1, keepdim=True)\n"),
    ]
    invalid = [
        Invalid(
            "import torch\nattn = torch.exp(scores) / torch.exp(scores).sum(dim=-1, keepdim=True)\n",
            fixed="import torch\nattn = torch.softmax(scores, dim=-1)\n",
        ),
        Invalid(
            "import torch as T\np = (s / tau).exp() / T.sum((s / tau).exp(), 1, keepdim=True)\n",
            fixed="import torch as T\np = T.softmax(s / tau, 1)\n",
        ),
        Invalid("import torch\ne = torch.exp(x)\np = e / e.sum(-1, keepdim=True)\n"),
        Invalid("import torch\ne = x.exp()\ne /= e.sum(1).unsqueeze(1)\n"),
        Invalid("import torch\np = torch.exp(x) / torch.exp(x).sum()\n"),
        Invalid(
            "import torch\nlse = torch.log(torch.exp(energies).sum(dim=1))\n",
            fixed="import torch\nlse = torch.logsumexp(energies, dim=1)\n",
        ),
        Invalid(
            "from torch import exp, log, sum\nz = log(sum(exp(a), -1, keepdim=True))\n",
            fixed="from torch import exp, log, sum\nimport torch\nz = torch.logsumexp(a, -1, keepdim=True)\n",
        ),
        Invalid("import torch\nz = x.exp().sum().log()\n"),
        Invalid("import torch\np = torch.exp(self.proj(h)) / torch.exp(self.proj(h)).sum(-1, keepdim=True)\n"),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.values = LocalValues()

    # -- exps --------------------------------------------------------------------
    def _exp_source(self, node: cst.BaseExpression) -> Tuple[Optional[cst.BaseExpression], Optional[cst.BaseExpression], bool]:
        """(exp call, its argument, through a name) of an unstabilised exp."""
        via = False
        if isinstance(node, cst.Name):
            bound = self.values.lookup(node.value)
            if bound is None:
                return None, None, False
            node, via = bound, True
        x = _exp_arg(self.ctx, node)
        if x is None or _bounded(self.ctx, x, self.values) or is_upcast(self.ctx, x) \
                or not self.ctx.facts.can_be_half(x):
            return None, None, False  # bounded, or float32 where the exp runs (``exp(torch.linspace(-eta, 0, n))``)
        return node, x, via

    def _sum_of(self, node: cst.BaseExpression) -> Optional[Tuple[cst.Call, cst.BaseExpression, bool]]:
        """(sum call, its operand, wrapped) for a denominator ``S.sum(...)`` /
        ``torch.sum(S, ...)``, looking through reshapes, clamps and ``+ eps``."""
        wrapped = False
        for _ in range(6):
            if isinstance(node, cst.Subscript):
                node, wrapped = node.value, True
                continue
            if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
                if number(node.right) is not None or isinstance(node.right, (cst.Name, cst.Attribute)):
                    node, wrapped = node.left, True
                    continue
            if (
                isinstance(node, cst.Call)
                and isinstance(node.func, cst.Attribute)
                and node.func.attr.value in _DENOM_WRAPPERS
                and is_method_call(self.ctx, node)
            ):
                node, wrapped = node.func.value, True
                continue
            break
        if not isinstance(node, cst.Call) or torch_op(self.ctx, node) != "sum":
            return None
        if is_method_call(self.ctx, node):
            return node, node.func.value, wrapped  # type: ignore[union-attr]
        first = arg(node, 0, "input")
        if first is None:
            return None
        return node, first.value, wrapped

    # -- divisions -----------------------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Divide):
            self._division(node, node.left, node.right)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if isinstance(node.operator, cst.DivideAssign) and isinstance(node.target, cst.Name):
            self._division(node, node.target, node.value)

    def _division(self, node: cst.CSTNode, num: cst.BaseExpression, den: cst.BaseExpression) -> None:
        exp, x, via = self._exp_source(num)
        if exp is None:
            return
        found = self._sum_of(den)
        if found is None:
            return
        total, operand, wrapped = found
        if via:
            assert isinstance(num, cst.Name)
            same = isinstance(operand, cst.Name) and operand.value == num.value
        else:
            x2 = _exp_arg(self.ctx, operand)
            same = x2 is not None and _text(self.ctx, x2) == _text(self.ctx, x)  # type: ignore[arg-type]
        if not same:
            return
        dtype = self.ctx.dtype
        self.report(
            node,
            f"manual softmax: exp overflows {dtype.name} to inf for x >= {fmt(dtype.exp_overflow)} "
            f"(max {fmt(dtype.max)}), and inf / inf = NaN; torch.softmax subtracts the max first",
            None if (via or wrapped or isinstance(node, cst.AugAssign)) else self._softmax_fix(node, x, total),  # type: ignore[arg-type]
            autocast_float32="exp",
        )

    def _softmax_fix(self, node: cst.CSTNode, x: cst.BaseExpression, total: cst.Call) -> Optional[FixSpec]:
        if not _pure(self.ctx, x):
            return None
        method = is_method_call(self.ctx, total)
        args = list(total.args) if method else list(total.args[1:])
        dim = keepdim = None
        position = 0
        for a in args:
            if a.star:
                return None
            name = a.keyword.value if a.keyword is not None else ("dim" if position == 0 else "keepdim")
            if a.keyword is None:
                position += 1
            if name == "dim" and dim is None:
                dim = a
            elif name == "keepdim" and keepdim is None:
                keepdim = a
            else:
                return None
        if dim is None or keepdim is None:
            return None
        if not (isinstance(keepdim.value, cst.Name) and keepdim.value.value == "True"):
            return None
        if isinstance(dim.value, (cst.Tuple, cst.List)) or (dim.value.lpar and isinstance(dim.value, cst.Tuple)):
            return None
        torch = self.ctx.torch_name()
        new = cst.Call(
            func=cst.parse_expression(f"{torch}.softmax"),
            args=[
                cst.Arg(x.with_changes(lpar=[], rpar=[])),
                dim.with_changes(comma=cst.MaybeSentinel.DEFAULT),
            ],
        )
        return FixSpec(SAFE, f"Use {torch}.softmax", replace=[(node, new)], imports=("torch",))

    # -- log(sum(exp)) -------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        self.values.call(node)
        operand = log_call_operand(self.ctx, node)
        if operand is None:
            return
        via = False
        if isinstance(operand, cst.Name):
            bound = self.values.lookup(operand.value)
            if bound is None:
                return
            operand, via = bound, True
        if not isinstance(operand, cst.Call) or torch_op(self.ctx, operand) != "sum":
            return
        if is_method_call(self.ctx, operand):
            inner = operand.func.value  # type: ignore[union-attr]
            rest = list(operand.args)
        else:
            first = arg(operand, 0, "input")
            if first is None or first.keyword is not None:
                return
            inner = first.value
            rest = [a for a in operand.args if a is not first]
        exp, x, via_exp = self._exp_source(inner)
        if exp is None:
            return
        dtype = self.ctx.dtype
        fix = None if (via or via_exp) else self._lse_fix(node, x, rest)  # type: ignore[arg-type]
        self.report(
            node,
            f"log(sum(exp(x))) by hand: exp overflows {dtype.name} to inf for x >= {fmt(dtype.exp_overflow)} "
            f"(max {fmt(dtype.max)}), so the result is inf; torch.logsumexp subtracts the max first",
            fix,
            autocast_float32="exp",
        )

    def _lse_fix(self, node: cst.Call, x: cst.BaseExpression, rest) -> Optional[FixSpec]:
        dim = None
        position = 0
        for a in rest:
            if a.star:
                return None
            name = a.keyword.value if a.keyword is not None else ("dim" if position == 0 else "keepdim")
            if a.keyword is None:
                position += 1
            if name == "dim":
                dim = a
            elif name != "keepdim":
                return None
        if dim is None:
            return None
        torch = self.ctx.torch_name()
        args = [cst.Arg(x.with_changes(lpar=[], rpar=[]))]
        for a in rest:
            args.append(a.with_changes(comma=cst.MaybeSentinel.DEFAULT))
        new = cst.Call(func=cst.parse_expression(f"{torch}.logsumexp"), args=args)
        return FixSpec(SAFE, f"Use {torch}.logsumexp", replace=[(node, new)], imports=("torch",))
