from __future__ import annotations

import re

from typing import Optional

import libcst as cst

from nanlint.analysis import ACTIVATION
from nanlint.dtypes import FLOAT16, fmt
from nanlint.engine import subtree
from nanlint.finding import HIGH, LOW, MEDIUM, UNSAFE
from nanlint.patterns import is_upcast, is_method_call, is_reference, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid

EXP_OPS = {"exp": "exp", "exp_": "exp_", "expm1": "expm1", "expm1_": "expm1_", "exp2": "exp2", "exp2_": "exp2_"}
# exp2 overflows float16 above log2(65504) = 15.999
EXP2_OVERFLOW = 15.999
# reductions that add the exps up: clamping each term does not keep them finite
SUM_OPS = frozenset({"sum", "nansum", "cumsum"})


class UnclampedExp(Rule):
    """
    ## What it does
    Flags `torch.exp(x)`, `x.exp()`, `torch.exp_`, `torch.expm1` and
    `torch.exp2`/`torch.special.exp2` whose argument is not provably bounded
    above and may be a float16 tensor.

    Confidence: **high** where an ordinary input overflows: the argument is a
    score -- a product with a transposed activation (`q @ k.T * scale`,
    `bmm(q, k.transpose(1, 2))`, an `einsum`): a dot product over d features
    above 11 is ordinary (a product transposed back the same way,
    `matmul(attn, v.transpose(1, 2)).transpose(1, 2)`, is channel-first code
    applying an alignment to values, not a score) -- or an activation whose exp is summed or
    normalised (a manual softmax over logits: `exp(x).sum()`,
    `e = exp(x); e / e.sum()`). **medium** for the exp of another activation
    (the output of a layer, a parameter of `forward`): a predicted
    log-variance or log-scale overflows only once it reaches 11, a real but
    unusual value (shown with `--min-confidence medium`); medium too, for
    `exp`/`expm1`, in a project that casts nothing to half (no `.half()`,
    `torch_dtype=torch.float16`, DeepSpeed `"fp16"` config...): CUDA/MPS
    autocast computes `exp` in float32, so only a model run in pure float16
    overflows there (CPU autocast does not, but trains in float16 rarely).
    **low** where the
    analysis cannot tell where the argument comes from (schedule arithmetic,
    a helper's parameter, summed or not): shown with `--min-confidence low`.

    Not reported: arguments bounded above (clamped, max-subtracted -- also
    `x - maximum(m, x.max())` --, log-probabilities, non-positive values); the
    exp of an entropy, `-sum(p * log(p))` or `-sum(xlogy(p, p))` with the same
    tensor on both sides, taken to be a normalised distribution (a
    perplexity is at most the number of classes: a pattern heuristic); tensors
    that are float32 where the exp runs (upcast, also through
    `q, g = [t.float() for t in (q, g)]`).

    ## Why is this bad?
    The largest float16 value is 65504, so `exp(x)` is `inf` for every
    x >= 11.09 (`exp2(x)` for x >= 16). An activation, a log-variance or an
    attention score above 11 is ordinary, and once one element is `inf` the
    next subtraction or normalisation makes it NaN. A manual softmax
    `exp(x) / exp(x).sum()` is already NaN at x = 20, where `torch.softmax` is
    fine; and clamping each term does not save it, since the sum of many
    finite terms still overflows: there the message points to
    `torch.logsumexp`/`torch.softmax` or an upcast instead of a clamp.
    (bfloat16 and float32 overflow only above 88.7, so this rule is active
    only when float16 is a target dtype.)

    Quiet when the argument is bounded above (the shared range facts): clamped
    or clipped from above (`clamp(max=...)`, `clamp_max`, `torch.minimum`),
    max-stabilised (`x - x.max(...)`, `x - x.amax(...)`, `x - torch.logsumexp(...)`,
    `x - scatter_max(x, index)[0][index]`, or `x - m` with `m` assigned such a
    max), provably <= 0 (`-x**2`, `-0.5 * (d / s) ** 2`, `-abs(x)`, `-relu(x)`,
    `log_softmax`, `logsigmoid`, `-cumsum` of non-negative values, the values
    of `torch.sort`/`topk` of such a tensor), a bounded function (`tanh`,
    `sigmoid`, `sin`, `cos`, `uniform_(a, b)`), a literal, or the result of a
    helper whose summary says it returns log-probabilities -- a function or
    method of this file or of an imported project module
    (`def log_probs(x): return F.log_softmax(x, -1)`), or a layer attribute
    built as `nn.LogSoftmax`/`nn.LogSigmoid` (`self.logsoftmax(x)`). Variable
    names decide only where nothing else does: a subtrahend named like a
    running max (`max_`, `row_max`, `lse`) stabilises, a `log_probs` is <= 0.

    Quiet too when the value cannot be float16: an explicit upcast
    (`x.float().exp()`), a provably float32/float64, integer or host value
    (`torch.linspace(..., dtype=torch.float64)`, numpy data, Python numbers),
    inside a float32 region (`autocast(enabled=False)`, `@force_fp32`); a
    module attribute (`self.logit_scale.exp()`), a learned log-scale parameter
    that would need a value above 11.09 (a scale above 65504) to overflow; a
    complex exponential (`(1j * x).exp()`); and a user's own `exp`, which is
    not the tensor op: `Tensor.exp()` takes no argument, so `SO3.exp(omega)` or
    `cls.exp(v)` is a method of the project, and so is `self.exp()` when the
    class defines `exp`. `math.exp`, `np.exp` and an exp called with an argument on something that is
    not torch (inductor's `ops.exp(x)`, triton's `libdevice.exp(x)`) are not
    torch ops and are never flagged.

    ## Example
    ```python
    std = torch.exp(0.5 * self.fc_logvar(h))
    p = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)
    ```

    ## Use instead
    ```python
    logvar = self.fc_logvar(h)
    std = torch.exp((0.5 * logvar).clamp(max=math.log(torch.finfo(logvar.dtype).max) - 0.01))
    p = torch.softmax(scores, dim=-1)  # or torch.logsumexp for the normaliser
    ```

    ## Fix safety
    Unsafe: values that overflowed are capped instead, which changes results
    (for the better, but visibly). The bound is `log(finfo(dtype).max) - 0.01`:
    the exact `log(finfo.max)` is rounded *up* when the clamp casts it to the
    tensor's dtype (11.0899 becomes 11.09375 in float16, whose exp is inf), so
    the margin is what keeps the result finite. The fix is offered only when
    the argument is a plain name or attribute, which it must read twice, and
    never for a summed exp (a clamp would leave the sum overflowing).
    """

    code = "NL002"
    float16_only = True
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
        # bounded through a layer attribute, a helper, a reduction, a sort
        Valid(
            "import torch\nimport torch.nn as nn\n\n"
            "class Head(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.logsoftmax = nn.LogSoftmax(dim=-1)\n\n"
            "    def forward(self, x):\n"
            "        return torch.exp(self.logsoftmax(x))\n"
        ),
        Valid(
            "import torch\nimport torch.nn.functional as F\n\n"
            "def log_probs(x):\n    return F.log_softmax(x, -1)\n\n"
            "p = torch.exp(log_probs(x))\n"
        ),
        Valid("import torch.nn.functional as F\nlprobs = F.log_softmax(x, -1)\nprobs = lprobs.exp_()\n"),
        Valid("import torch\nimport torch.nn.functional as F\nT = torch.exp(-torch.cumsum(F.relu(d) * dt, -1))\n"),
        Valid("from torch_scatter import scatter_max\ne = (x - scatter_max(x, i, dim=0)[0][i]).exp()\n"),
        Valid("import torch.nn.functional as F\nimport torch\nv, i = torch.sort(F.log_softmax(x, -1))\np = torch.exp(v)\n"),
        Valid("import torch\nk = torch.exp(-0.5 * (d / sigma) ** 2)\n"),
        # never float16, or not the tensor op
        Valid("import torch\nt = torch.linspace(0, 1, 10, dtype=torch.float64)\ny = torch.exp(t * 20)\n"),
        Valid("import torch\nphase = (1j * x).exp()\n"),
        Valid(
            "class SO3:\n"
            "    @classmethod\n"
            "    def exp(cls, omega):\n        return omega\n\n"
            "    @classmethod\n"
            "    def compose(cls, a, b):\n        return cls.exp(a + b)\n"
        ),
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
        # an activation (high confidence); a summed exp (no clamp: logsumexp/softmax)
        Invalid(
            "import torch\nimport torch.nn as nn\n\n"
            "class Gate(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.proj = nn.Linear(8, 8)\n\n"
            "    def forward(self, x):\n"
            "        return torch.exp(self.proj(x))\n"
        ),
        Invalid("import torch\np = torch.exp(q @ k) / torch.exp(q @ k).sum(-1, keepdim=True)\n", count=2),
        # a helper of this file that does not bound its result
        Invalid("import torch\n\ndef logits(x):\n    return x * 2\n\ny = torch.exp(logits(x))\n"),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        op = torch_op(self.ctx, node)
        if op not in EXP_OPS or _not_torch(self.ctx, node):
            return
        if node.args and is_method_call(self.ctx, node):
            return  # `ops.exp(x)`, `libdevice.exp(x)`: a tensor's exp takes no argument
        x = subject(self.ctx, node)
        facts = self.ctx.facts
        if x is None or facts.bounded_above(x) or self._complex_file() and _complex(self.ctx, x):
            return
        if is_upcast(self.ctx, x) or _module_attribute(self.ctx, x) or not facts.can_be_half(x):
            return
        limit = EXP2_OVERFLOW if op.startswith("exp2") else FLOAT16.exp_overflow
        spelled = f"{op}" if op.startswith("exp") else op
        origin = facts.origin(x)
        if self._summed(node):
            self.report(
                node,
                f"`{spelled}` of an argument that is not bounded above is summed: float16 overflows to inf "
                f"for x >= {fmt(limit)} (max {fmt(FLOAT16.max)}), and clamping each term leaves the sum "
                "overflowing; use `torch.logsumexp` / `torch.softmax`, or upcast (`x.float().exp()`)",
                None,
                confidence=HIGH if origin == ACTIVATION else LOW,
                autocast_float32=_autocast_float32(op),
            )
            return
        self.report(
            node,
            f"`{spelled}` of an argument that is not bounded above: float16 overflows to inf "
            f"for x >= {fmt(limit)} (max {fmt(FLOAT16.max)}); clamp it or max-stabilise it",
            self._fix(node, x, "log2" if op.startswith("exp2") else "log"),
            confidence=(HIGH if facts.is_score(x) else MEDIUM) if origin == ACTIVATION else LOW,
            autocast_float32=_autocast_float32(op),
        )

    def _complex_file(self) -> bool:
        """The file spells a complex value somewhere (an imaginary literal,
        ``torch.complex``/``polar``/``view_as_complex``): read once."""
        found = getattr(self, "_complex_text", None)
        if found is None:
            found = self._complex_text = _COMPLEX_TEXT.search(self.ctx.source) is not None
        return found

    def _summed(self, call: cst.Call) -> bool:
        """The exp is summed (``exp(x).sum()``, ``e = exp(x); e / e.sum()``) or is
        the numerator of a division by a sum (``exp(x) / exp(x).sum()``)."""
        if any(c in SUM_OPS for c in self.ctx.facts.consumers(call)):
            return True
        up = self.ctx.facts.scopes.parent.get(call)
        if isinstance(up, cst.BinaryOperation) and isinstance(up.operator, cst.Divide) and up.left is call:
            return any(
                isinstance(sub, cst.Call) and torch_op(self.ctx, sub) in SUM_OPS for sub in subtree(up.right, 200)
            )
        return False

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


def _autocast_float32(op: str) -> Optional[str]:
    """The op's name where CUDA/MPS autocast computes it in float32 (``exp``,
    ``expm1``; not ``exp2``)."""
    name = op.rpartition(".")[2].rstrip("_")
    return name if name in ("exp", "expm1") else None


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




def _not_torch(ctx, call: cst.Call) -> bool:
    """A user's own ``exp``, not the tensor op: ``Tensor.exp()`` takes no
    argument, so ``cls.exp(v)`` / ``SO3.exp(omega)`` is a method of the
    project (a Lie group's exponential map); so is ``self.exp(...)`` when the
    class around it defines ``exp``."""
    if not is_method_call(ctx, call):
        return False
    if call.args:
        return True
    func = call.func
    if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value in ("self", "cls"):
        return ctx.facts.scopes.function_named(func.attr.value, call) is not None
    return False


def _complex(ctx, node: cst.BaseExpression, depth: int = 0) -> bool:
    """``(1j * x).exp()``, or an argument built from a complex value through
    arithmetic, calls and local names (``lam = -a.exp() + 1j * b`` then
    ``torch.einsum(..., lam * t, ...).exp()``, a state-space kernel): a
    complex exponential, of modulus ``exp(real part)``, never a float16
    tensor (a half operand makes complex32, which exp does not support)."""
    if depth > 3:
        return False
    scopes = ctx.facts.scopes
    for sub in subtree(node, 200):
        if isinstance(sub, cst.Imaginary):
            return True
        if isinstance(sub, cst.Call) and torch_op(ctx, sub) in _COMPLEX_MAKERS:
            return True
        if isinstance(sub, cst.Name) and depth < 3:
            found = scopes.reaching(sub)
            if len(found) == 1 and found[0].kind == "assign" and found[0].value is not None \
                    and found[0].value is not node and _complex(ctx, found[0].value, depth + 1):
                return True
    return False


_COMPLEX_TEXT = re.compile(r"(?<![\w.])\d[\d_.]*(?:[eE][-+]?\d+)?[jJ]\b|\b(?:complex|polar|view_as_complex)\s*\(")
#: torch functions that return a complex tensor
_COMPLEX_MAKERS = frozenset({"complex", "polar", "view_as_complex"})
