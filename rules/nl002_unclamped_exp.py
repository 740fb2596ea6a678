from __future__ import annotations

import re

from typing import Optional

import libcst as cst

from nanlint.dtypes import FLOAT16, fmt
from nanlint.finding import UNSAFE
from nanlint.patterns import is_upcast, Bindings, bounded_above, is_method_call, is_reference, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid

EXP_OPS = {"exp": "exp", "exp_": "exp_", "expm1": "expm1", "expm1_": "expm1_", "exp2": "exp2", "exp2_": "exp2_"}
# exp2 overflows float16 above log2(65504) = 15.999
EXP2_OVERFLOW = 15.999


class UnclampedExp(Rule):
    """
    ## What it does
    Flags `torch.exp(x)`, `x.exp()`, `torch.exp_`, `torch.expm1` and
    `torch.exp2`/`torch.special.exp2` whose argument is not provably bounded
    above.

    ## Why is this bad?
    The largest float16 value is 65504, so `exp(x)` is `inf` for every
    x >= 11.09 (`exp2(x)` for x >= 16). An activation, a log-variance or an
    attention score above 11 is ordinary, and once one element is `inf` the
    next subtraction or normalisation makes it NaN. A manual softmax
    `exp(x) / exp(x).sum()` is already NaN at x = 20, where `torch.softmax` is
    fine. (bfloat16 and float32 overflow only above 88.7, so this rule is active
    only when float16 is a target dtype.)

    An argument counts as bounded when it is clamped or clipped from above
    (`clamp(max=...)`, `clamp_max`, `torch.minimum`), max-stabilised
    (`x - x.max(...)`, `x - x.amax(...)`, `x - torch.logsumexp(...)`, or
    `x - m` with `m` assigned such a max), provably <= 0 (`-x**2`,
    `-x.pow(2)`, `-abs(x)`, `-relu(x)`, `-softplus(x)`, `log_softmax`,
    `logsigmoid`, a non-negative `arange` times a negative constant, a
    cumulative sum of such values), a bounded function (`tanh`, `sigmoid`,
    `sin`, `cos`, `uniform_(a, b)`) or a literal. Variable names help where the
    code shows nothing else: a subtrahend named like a running max (`max_`,
    `row_max`, `lse`) stabilises, a `log_probs` is <= 0.

    Not flagged either: an argument explicitly upcast (`x.float().exp()`,
    `x.to(torch.float32)`), since exp then runs in float32, and a module
    attribute (`self.logit_scale.exp()`), a learned log-scale parameter that
    would need a value above 11.09 (a scale above 65504) to overflow.
    `math.exp`, `np.exp` and an exp called with an argument on something that is
    not torch (inductor's `ops.exp(x)`, triton's `libdevice.exp(x)`) are not
    torch ops and are never flagged.

    ## Example
    ```python
    std = torch.exp(0.5 * logvar)
    ```

    ## Use instead
    ```python
    std = torch.exp((0.5 * logvar).clamp(max=math.log(torch.finfo(logvar.dtype).max) - 0.01))
    # or a stabilised form: torch.softmax, torch.logsumexp, F.softplus
    ```

    ## Fix safety
    Unsafe: values that overflowed are capped instead, which changes results
    (for the better, but visibly). The bound is `log(finfo(dtype).max) - 0.01`:
    the exact `log(finfo.max)` is rounded *up* when the clamp casts it to the
    tensor's dtype (11.0899 becomes 11.09375 in float16, whose exp is inf), so
    the margin is what keeps the result finite. The fix is offered only when
    the argument is a plain name or attribute, which it must read twice.
    """

    code = "NL002"
    name = "unclamped-exp"
    summary = "exp of an argument not bounded above overflows float16 for x >= 11.09"
    fix_applicability = UNSAFE
    # exp, exp_, expm1, expm1_, exp2, exp2_ as a word (not `expand`, `expected`)
    triggers = (re.compile(r"\bexp(?:m1|2)?_?\b"),)
    valid = [
        Valid("import torch\ny = torch.exp(x - x.max(dim=-1, keepdim=True).values)\n"),
        Valid("import torch\nm = x.amax(-1, keepdim=True)\ny = torch.exp(x - m)\n"),
        Valid("import torch\ny = torch.exp(-x ** 2)\n"),
        Valid("import torch\ny = torch.exp(x.clamp(max=10))\n"),
        Valid("import torch\ny = torch.tanh(x).exp()\n"),
        Valid("import math\ny = math.exp(x)\n"),
        Valid("import numpy as np\ny = np.exp(x)\n"),
        Valid(
            "import math, torch\n"
            "div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))\n"
        ),
        Valid("import torch.nn.functional as F\nimport torch\np = torch.exp(F.log_softmax(x, -1))\n"),
        Valid("import torch\nscale = self.logit_scale.exp()\n"),
        # inductor's and triton's exp are not torch ops (a tensor's exp takes no argument)
        Valid("import torch\nfrom .virtualized import ops\ny = ops.exp(x)\n"),
        Valid("import torch\nfrom .triton_compat import libdevice\ny = libdevice.exp(x)\n"),
        Valid("import torch\nA = -torch.exp(A_log.float())\n"),
        Valid("import torch\nA = -torch.exp(A_log.float())\nL = torch.exp(torch.cumsum(A, dim=-1))\n"),
    ]
    invalid = [
        Invalid(
            "import torch\nstd = torch.exp(logvar)\n",
            fixed=(
                "import math\nimport torch\n"
                "std = torch.exp(logvar.clamp(max=math.log(torch.finfo(logvar.dtype).max) - 0.01))\n"
            ),
        ),
        Invalid(
            "import torch as T\nimport math\ny = out.scale.exp()\n",
            fixed=(
                "import torch as T\nimport math\n"
                "y = out.scale.clamp(max=math.log(T.finfo(out.scale.dtype).max) - 0.01).exp()\n"
            ),
        ),
        Invalid("from torch import exp\ny = exp(a @ b)\n"),
        Invalid(
            "import torch\nimport math\ny = torch.exp2(x)\n",
            fixed="import torch\nimport math\ny = torch.exp2(x.clamp(max=math.log2(torch.finfo(x.dtype).max) - 0.01))\n",
        ),
        Invalid("import torch\ny = torch.exp(x.clamp(min=-5))\n"),
        Invalid("import torch\nnum = torch.exp(x)\nden = torch.exp(x).sum(-1)\n", count=2),
    ]

    @classmethod
    def active(cls, dtypes) -> bool:
        return any(d.name == FLOAT16.name for d in dtypes)

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.bindings = Bindings()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.bindings.push()

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.bindings.pop()

    def leave_Assign(self, node: cst.Assign) -> None:
        # bound after the value is visited: in `x = torch.exp(x)` the x inside
        # is the previous x, not this assignment
        self.bindings.assign(node)

    def visit_Call(self, node: cst.Call) -> None:
        op = torch_op(self.ctx, node)
        if op not in EXP_OPS:
            return
        if node.args and is_method_call(self.ctx, node):
            return  # `ops.exp(x)`, `libdevice.exp(x)`: a tensor's exp takes no argument
        x = subject(self.ctx, node)
        if x is None or bounded_above(self.ctx, x, self.bindings):
            return
        if is_upcast(self.ctx, x) or _module_attribute(self.ctx, x):
            return
        limit = EXP2_OVERFLOW if op.startswith("exp2") else FLOAT16.exp_overflow
        spelled = f"{op}" if op.startswith("exp") else op
        self.report(
            node,
            f"`{spelled}` of an argument that is not bounded above: float16 overflows to inf "
            f"for x >= {fmt(limit)} (max {fmt(FLOAT16.max)}); clamp it or max-stabilise it",
            self._fix(node, x, "log2" if op.startswith("exp2") else "log"),
        )

    def _fix(self, call: cst.Call, x: cst.BaseExpression, log: str) -> Optional[FixSpec]:
        if not is_reference(x) or x.lpar:
            return None
        text = self.ctx.code(x)
        torch = self.ctx.torch_name()
        bound = f"math.{log}({torch}.finfo({text}.dtype).max) - 0.01"
        clamped = cst.parse_expression(f"{text}.clamp(max={bound})")
        if is_method_call(self.ctx, call):
            assert isinstance(call.func, cst.Attribute)
            new: cst.CSTNode = call.with_changes(func=call.func.with_changes(value=clamped))
            target: cst.CSTNode = call
        else:
            new, target = clamped, x
        return FixSpec(
            UNSAFE,
            f"Clamp the argument at {log}(finfo(dtype).max) - 0.01 so it stays finite",
            replace=[(target, new)],
            imports=("math", "torch"),
        )


_SHAPE_METHODS = frozenset(
    {"to", "view", "reshape", "unsqueeze", "squeeze", "transpose", "permute", "expand",
     "expand_as", "contiguous", "flatten", "detach", "clone", "t"}
)


def _strip_shape_calls(ctx, node: cst.BaseExpression) -> cst.BaseExpression:
    while (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value in _SHAPE_METHODS
        and ctx.resolve(node.func) is None
    ):
        node = node.func.value
    return node


def _module_attribute(ctx, node: cst.BaseExpression) -> bool:
    """``self.logit_scale`` (possibly ``.to(device)``): a module's learned
    log-scale parameter, which would need a value above 11.09 (a scale above
    65504) to overflow."""
    node = _strip_shape_calls(ctx, node)
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in ("float", "double"):
        return False
    if not isinstance(node, cst.Attribute):
        return False
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name) and node.value == "self"


