from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Set, Tuple

import libcst as cst

from nanlint.engine import subtree, children

from nanlint.dtypes import DtypeFacts
from nanlint.finding import MEDIUM, UNSAFE
from nanlint.patterns import number, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid

TANH_OPS = frozenset({"tanh", "tanh_"})

# Literals that mark the tanh approximation of GELU, 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))):
# 0.044715, sqrt(2/pi) = 0.7978845608..., and their product 0.0356774...
_GELU_CONSTANTS = (0.044715, 0.7978845608, 0.0356774)


def dead_below(dtype: DtypeFacts) -> float:
    """The b below which tanh(b) rounds to exactly -1 in ``dtype``: 1 + tanh(b) ~ 2 exp(2b)
    falls under a quarter of the spacing at 1 (eps / 4, as the spacing just below 1 is
    eps / 2). float16: -4.51 (measured: 1 + tanh(b) == 0 for every b <= -4.5078 on CPU,
    torch 2.13), bfloat16: -3.47 (measured -3.469), float32: -9.01 (measured -9.011)."""
    return 0.5 * math.log(dtype.eps / 8)


class TanhGate(Rule):
    """
    ## What it does
    Flags multiplicative gates built from tanh: `a * (1 + torch.tanh(b))`,
    `(1 + tanh(b)) * a`, `(tanh(b) + 1) * a`, `(1 - tanh(b)) * a`, the same
    factor passed to `mul`/`mul_`/`*=`, or bound to a name that is then used
    as a factor. Every spelling of torch's tanh counts (`torch.tanh`,
    `F.tanh`, `b.tanh()`, `from torch import tanh`); `math.tanh` and
    `np.tanh` do not.

    Every finding is medium confidence: a saturated gate stops learning (its
    factor and gradient are exactly 0) but produces no inf or NaN, and it
    needs a gate pre-activation beyond 4.51 in float16, which a learned gate
    (often initialised at 0) reaches only after drifting: shown with
    `--min-confidence medium`.

    ## Why is this bad?
    `1 + tanh(b)` is `2 exp(2b)` for negative b, and float16 keeps only
    11 bits: tanh(b) rounds to exactly -1 for every b <= -4.51 (measured on
    torch 2.13: `1 + tanh(b)` is 0 from b = -4.5078 down; bfloat16 already
    from b = -3.47). The factor is then exactly 0, so the gated activation is
    0, and the gradient through the gate, `1 - tanh(b)**2`, is 0 too: the
    gate can never reopen (a dead gate). `1 - tanh(b)` dies the same way for
    b >= 4.51.

    Not flagged: tanh as an activation (`torch.tanh(h)`) or added
    (`a + torch.tanh(b)`), and self-gated activations, where the gated
    tensor itself is inside the tanh, such as the tanh approximation of GELU
    `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))`: its factor
    is 0 only for x <= -3.59 in float16, where the exact GELU is at most
    6.0e-4 in magnitude -- less than the formula's ordinary float16 rounding
    error elsewhere (8.3e-4 at x = -2.63) -- so nothing alive is killed
    (like ReLU's zero for x < 0).

    ## Example
    ```python
    h = x * (1 + torch.tanh(scale))
    pos = (1 - self.gate.tanh()) * self.embedding
    ```

    ## Use instead
    ```python
    h = x * (torch.sigmoid(scale) + 0.5)
    pos = (1.5 - torch.sigmoid(self.gate)) * self.embedding
    ```

    ## Fix safety
    Unsafe: the gate changes from `1 + tanh(b)`, in [0, 2], to
    `sigmoid(b) + 0.5`, in [0.5, 1.5], which is never 0 (its float16
    floor is 0.5). Both are 1 at b = 0, so a gate initialised as the
    identity stays the identity, but the gate's slope at 0 is 0.25 instead
    of 1 and its range is narrower: retrain (or re-tune the gate's
    learning rate) after applying it. `1 - tanh(b)` becomes its mirror
    image `1.5 - sigmoid(b)` (1 at b = 0, decreasing, in [0.5, 1.5]).
    The argument b is still evaluated once.
    """

    code = "NL006"
    name = "tanh-gate"
    summary = "a (1 + tanh(b)) or (1 - tanh(b)) gate is exactly 0 in float16 once |b| >= 4.51, killing gradients"
    fix_applicability = UNSAFE
    triggers = ("tanh",)
    valid = [
        Valid("import torch\nh = torch.tanh(x)\n"),
        Valid("import torch\nh = x + torch.tanh(b)\n"),
        Valid("import torch\nh = x * torch.tanh(b)\n"),
        Valid("import numpy as np\ny = x * (1 + np.tanh(b))\n"),
        Valid("import math\ny = x * (1 + math.tanh(b))\n"),
        Valid(
            "import math, torch\n"
            "def gelu(x):\n"
            "    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))\n"
        ),
        Valid(
            "import torch\n"
            "def gelu(a):\n"
            "    inner = 0.7978845608 * (a + 0.044715 * a * a * a)\n"
            "    return 0.5 * a * (1 + torch.tanh(inner))\n"
        ),
        Valid("import torch\ng = 1 + torch.tanh(b)\nlog_g = torch.log(g)\n"),
        Valid("import torch\nd = 1 - torch.tanh(x) ** 2\ny = grad * d\n"),
    ]
    invalid = [
        Invalid(
            "import torch\nh = x * (1 + torch.tanh(scale))\n",
            fixed="import torch\nh = x * (torch.sigmoid(scale) + 0.5)\n",
        ),
        Invalid(
            "import torch\npos = (1 - self.gate.tanh()) * self.embedding\n",
            fixed="import torch\npos = (1.5 - torch.sigmoid(self.gate)) * self.embedding\n",
        ),
        Invalid(
            "import torch as T\nimport torch.nn.functional as F\ny = (F.tanh(w @ h) + 1.0) * v\n",
            fixed="import torch as T\nimport torch.nn.functional as F\ny = (T.sigmoid(w @ h) + 0.5) * v\n",
        ),
        Invalid(
            "from torch import tanh\nout = tanh(a) * (1 + tanh(b))\n",
            fixed="from torch import tanh\nimport torch\nout = tanh(a) * (torch.sigmoid(b) + 0.5)\n",
        ),
        Invalid(
            "import torch\ngate = 1 + torch.tanh(self.alpha)\nx = x * gate\n",
            fixed="import torch\ngate = torch.sigmoid(self.alpha) + 0.5\nx = x * gate\n",
        ),
        Invalid(
            "import torch\nx.mul_(1 + torch.tanh(s))\ny *= 1 - torch.tanh(t)\n",
            fixed="import torch\nx.mul_(torch.sigmoid(s) + 0.5)\ny *= 1.5 - torch.sigmoid(t)\n",
            count=2,
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        # name -> value, per function scope (module scope first)
        self.scopes: List[Dict[str, Optional[cst.BaseExpression]]] = [{}]
        # products already examined as part of an enclosing product
        self.seen: Set[int] = set()

    # -- scopes ---------------------------------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        # parameters shadow module-level names; their values are unknown
        self.scopes.append({name: None for name in _param_names(node.params)})

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.pop()

    def leave_Assign(self, node: cst.Assign) -> None:
        scope = self.scopes[-1]
        for target in node.targets:
            if isinstance(target.target, cst.Name):
                scope[target.target.value] = node.value
            elif isinstance(target.target, (cst.Tuple, cst.List)):
                for element in target.target.elements:
                    if isinstance(element.value, cst.Name):
                        scope[element.value.value] = None  # unpacked: unknown

    def _lookup(self, name: str) -> Optional[cst.BaseExpression]:
        if name in self.scopes[-1]:
            return self.scopes[-1][name]
        return self.scopes[0].get(name)

    # -- detection -------------------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Multiply) or id(node) in self.seen:
            return
        factors = list(self._factors(node))
        self._check_factors(factors)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if isinstance(node.operator, cst.MultiplyAssign):
            self._check_factors([node.target, *self._factors(node.value)])

    def visit_Call(self, node: cst.Call) -> None:
        op = torch_op(self.ctx, node)
        if op not in ("mul", "mul_", "multiply", "multiply_"):
            return
        operands = []
        if isinstance(node.func, cst.Attribute) and self.ctx.resolve(node.func) is None:
            operands.append(node.func.value)
        operands.extend(a.value for a in node.args if not a.star and (a.keyword is None or a.keyword.value == "other"))
        factors: List[cst.BaseExpression] = []
        for operand in operands:
            factors.extend(self._factors(operand))
        self._check_factors(factors)

    def _factors(self, node: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
        """The factors of a product chain (`0.5 * x * g` -> 0.5, x, g); a quotient's
        numerator counts (`x * g / 2`)."""
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.Multiply):
                self.seen.add(id(node))
                yield from self._factors(node.left)
                yield from self._factors(node.right)
                return
            if isinstance(node.operator, cst.Divide):
                yield from self._factors(node.left)
                return
        yield node

    def _check_factors(self, factors: List[cst.BaseExpression]) -> None:
        for index, factor in enumerate(factors):
            gate, via = factor, None
            base = _strip_shape(factor)
            if isinstance(base, cst.Name):
                bound = self._lookup(base.value)
                if bound is None:
                    continue
                gate, via = bound, base.value
            found = self._gate(gate)
            if found is None:
                continue
            sign, tanh_call, b = found
            others = factors[:index] + factors[index + 1:]
            if self._self_gated(b, others):
                continue
            # a tanh reached through a name (`t = torch.tanh(b)`, `(1 + t) * x`): a fix
            # would compute b a second time, later, when its names may have changed
            direct = any(n is tanh_call for n in subtree(gate))
            self._report(gate, sign, b, via, fixable=direct)

    def _gate(self, node: cst.BaseExpression) -> Optional[Tuple[str, cst.Call, cst.BaseExpression]]:
        """("+", call, b) for 1 + tanh(b) / tanh(b) + 1, ("-", call, b) for 1 - tanh(b)."""
        if not isinstance(node, cst.BinaryOperation):
            return None
        if isinstance(node.operator, cst.Add):
            for one, other in ((node.left, node.right), (node.right, node.left)):
                if number(one) == 1.0:
                    found = self._tanh(other)
                    if found is not None:
                        return ("+",) + found
        elif isinstance(node.operator, cst.Subtract) and number(node.left) == 1.0:
            found = self._tanh(node.right)
            if found is not None:
                return ("-",) + found
        return None

    def _tanh(self, node: cst.BaseExpression) -> Optional[Tuple[cst.Call, cst.BaseExpression]]:
        if isinstance(node, cst.Name):  # t = torch.tanh(b) ... (1 + t)
            bound = self._lookup(node.value)
            if isinstance(bound, cst.Call):
                node = bound
        if not isinstance(node, cst.Call) or torch_op(self.ctx, node) not in TANH_OPS:
            return None
        if isinstance(node.func, cst.Attribute) and self.ctx.resolve(node.func) is None:
            if node.args:
                return None
            return node, node.func.value
        args = [a for a in node.args if not a.star and (a.keyword is None or a.keyword.value == "input")]
        if len(args) != 1:
            return None
        return node, args[0].value

    def _self_gated(self, b: cst.BaseExpression, others: List[cst.BaseExpression]) -> bool:
        """An activation of the form x * (1 + tanh(g(x))) (GELU's tanh approximation,
        x * (1 + tanh(x / 2)) / 2 = SiLU): the factor is 0 only where the activation's
        exact value is already negligible, so nothing alive dies."""
        expanded = self._expand(b)
        if any(_has_constant(e) for e in expanded):
            return True
        inner: Set[str] = set()
        for e in expanded:
            inner |= {self.ctx.code(n) for n in _chains(e)}
        for other in others:
            if _is_chain(other) and self.ctx.code(other) in inner:
                return True
        return False

    def _expand(self, node: cst.BaseExpression) -> List[cst.BaseExpression]:
        """The expression plus the values of the local names it mentions (three levels)."""
        out = [node]
        seen: Set[str] = set()
        frontier = [node]
        for _ in range(3):  # inner = k * (x + kappa * x3); kappa = 0.044715
            nxt = []
            for expr in frontier:
                for name in _names_in(expr) - seen:
                    seen.add(name)
                    bound = self._lookup(name)
                    if bound is not None:
                        out.append(bound)
                        nxt.append(bound)
            frontier = nxt
        return out

    # -- report ----------------------------------------------------------------
    def _report(
        self, gate: cst.BaseExpression, sign: str, b: cst.BaseExpression, via: Optional[str], fixable: bool
    ) -> None:
        limits = ", ".join(
            f"{d.name}: b {'<=' if sign == '+' else '>='} {'-' if sign == '+' else ''}{abs(dead_below(d)):.3g}"
            for d in self.ctx.dtypes
        )
        shape = "1 + tanh(b)" if sign == "+" else "1 - tanh(b)"
        where = f" (through `{via}`)" if via else ""
        message = (
            f"`{shape}` used as a multiplicative gate{where}: tanh(b) rounds to exactly "
            f"{'-1' if sign == '+' else '1'} ({limits}), so the factor and its gradient are exactly 0 "
            f"(a dead gate); use `{'sigmoid(b) + 0.5' if sign == '+' else '1.5 - sigmoid(b)'}`, which never goes below 0.5"
        )
        torch = self.ctx.torch_name()
        b_code = self.ctx.code(b)
        new = f"{torch}.sigmoid({b_code}) + 0.5" if sign == "+" else f"1.5 - {torch}.sigmoid({b_code})"
        if not fixable:
            self.report(gate, message, confidence=MEDIUM)
            return
        fix = FixSpec(
            UNSAFE,
            "Replace the tanh gate by a sigmoid gate in [0.5, 1.5] that is never 0",
            replace=[(gate, new)],
            imports=("torch",),
        )
        self.report(gate, message, fix, confidence=MEDIUM)


_SHAPE_OPS = frozenset(
    {"view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as", "flatten", "permute",
     "transpose", "contiguous", "to", "type_as", "float", "half", "bfloat16", "detach", "clone"}
)


def _strip_shape(node: cst.BaseExpression) -> cst.BaseExpression:
    """`g[:, None]`, `g.view(...)`, `g.unsqueeze(0).to(x)` -> `g`: the same values."""
    for _ in range(8):
        if isinstance(node, cst.Subscript):
            node = node.value
        elif (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value in _SHAPE_OPS
        ):
            node = node.func.value
        else:
            break
    return node


def _has_constant(node: cst.CSTNode) -> bool:
    for n in subtree(node):
        if isinstance(n, cst.Float):
            value = number(n)
            if value is not None and any(abs(value - c) <= 1e-5 * c for c in _GELU_CONSTANTS):
                return True
    return False


def _is_chain(node: cst.CSTNode) -> bool:
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name)


def _chains(node: cst.CSTNode) -> Iterator[cst.BaseExpression]:
    """Every maximal Name/Attribute chain in an expression (`self.x`, `x`)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (cst.Name, cst.Attribute)) and _is_chain(n):
            yield n
            if isinstance(n, cst.Attribute):
                continue
        stack.extend(children(n))


def _names_in(node: cst.CSTNode) -> Set[str]:
    return {n.value for n in subtree(node) if isinstance(n, cst.Name)}


def _param_names(params: cst.Parameters) -> Set[str]:
    out = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            out.add(star.name.value)
    return out
