from __future__ import annotations

import re
from typing import Optional, Set

import libcst as cst

from nanlint.dtypes import fmt
from nanlint.finding import UNSAFE
from nanlint.patterns import arg, is_method_call, is_reference, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid
from nanlint.engine import subtree
from nanlint.gradients import ScopeTracking, const, guarded_calls, no_grad_value, strip

INVERSE_OPS = {
    "acos": "acos", "acos_": "acos", "arccos": "acos", "arccos_": "acos",
    "asin": "asin", "asin_": "asin", "arcsin": "asin", "arcsin_": "asin",
    "atanh": "atanh", "atanh_": "atanh", "arctanh": "atanh", "arctanh_": "atanh",
}
CLAMP_OPS = frozenset({"clamp", "clip", "clamp_", "clip_", "hardtanh"})
NORM_OPS = frozenset({"norm", "vector_norm"})
PRODUCT_OPS = frozenset({"matmul", "mm", "bmm", "einsum", "linear", "dot", "inner", "vdot"})
REDUCE_OPS = frozenset({"sum"})
# names that say "a cosine": cos, cosine, cos_sim, cos_theta, cosine_similarity...
_COS_NAME = re.compile(r"^(?:cos|cosine|cos_?sim(?:ilarity)?|cosine_?sim(?:ilarity)?|cos_?(?:theta|angle|t))$", re.IGNORECASE)
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript)


class UnclampedAcos(ScopeTracking, Rule):
    """
    ## What it does
    Flags `torch.acos`, `torch.asin` and `torch.atanh` (also `arccos`...,
    `x.acos()`, in-place forms) of a value that reaches ±1 by construction, when
    it is not clamped strictly inside (-1, 1): a cosine similarity
    (`F.cosine_similarity`), a dot product or matrix product of normalised
    vectors (`F.normalize`, `v / v.norm(...)`; for `acos`/`asin` any dot
    product, which they can only be meant to read as a cosine of vectors
    normalised elsewhere), a quotient by norms
    (`(a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))`), `cos`/`sin`/`tanh`
    of something, or a variable named like a cosine (`cos_theta`,
    `cosine`) -- inline or through a local variable assigned once. Also
    flags a clamp whose literal margin is smaller than the target dtype's eps
    (`clamp(-1, 1)`, `clamp(-1 + 1e-7, 1 - 1e-7)`).

    Not flagged: an argument clamped with a non-literal margin
    (`clamp(-1 + eps, 1 - eps)`, `torch.finfo(x.dtype).eps`), arbitrary
    arguments with no sign of being cosine-like, `math.acos`, and an `acos`
    inside a `torch.where` whose condition guards its argument (NL109's).

    Quiet where no gradient flows (`Facts.grad_flows`: `no_grad` code, the
    methods of a class whose `__call__` runs under `no_grad` such as an
    inference pipeline, `forward`/`backward` of a `torch.autograd.Function`, results
    read as integers), nor where the argument carries no gradient itself
    (fresh `torch.randn` draws, also passed to a helper's parameter at every
    call of it): the infinite derivative is never taken there.

    ## Why is this bad?
    Normalised vectors are unit length only up to rounding: measured on torch
    2.13 with 1000 random 64-d vectors, `(a * a).sum(-1)` after `F.normalize`
    exceeds 1 for 15.6% of them in float16 (17.5% in bfloat16, 20.8% in
    float32) and `F.cosine_similarity(a, a)` for 26%, so `acos` returns NaN.
    At exactly ±1 the value is fine but the derivative `-1/sqrt(1 - x²)` is
    -inf (`atanh` is inf there too), which poisons the gradient. A clamp must
    keep a margin of at least the dtype's eps: float16's eps is 9.77e-4, so
    `1 - 1e-7` rounds to exactly 1 and `clamp(-1 + 1e-7, 1 - 1e-7)` still
    gives an infinite gradient (measured, float16 and bfloat16, whose eps is
    7.81e-3). `nanlint confirm` proves it with a `new-nan` event (acos of
    |x| > 1 in the forward pass) or a `grad-nonfinite` event (at |x| = 1) at
    this line.

    ## Example
    ```python
    cos = F.cosine_similarity(a, b, dim=-1)
    angle = torch.acos(cos)
    ```

    ## Use instead
    ```python
    cos = F.cosine_similarity(a, b, dim=-1)
    angle = torch.acos(cos.clamp(-1 + torch.finfo(cos.dtype).eps, 1 - torch.finfo(cos.dtype).eps))
    ```

    ## Fix safety
    Unsafe: values within eps of ±1 are moved to ±(1 - eps), which changes
    the angle there by up to `acos(1 - eps)` = 0.044 rad in float16 (1.5e-4
    rad in float32) and zeroes the gradient of the clamped lanes. The clamp
    reads the dtype from the argument when it is a plain name or attribute,
    else from the first plain name of the expression (`(u * v).sum(-1)`
    reads `u.dtype`); the argument itself is still evaluated once. Clamps
    whose margin is too small are reported without a fix.
    """

    code = "NL105"
    name = "unclamped-acos"
    summary = "acos/asin/atanh of a cosine-like value without a clamp inside (-1, 1) by at least eps gives NaN or an infinite gradient"
    fix_applicability = UNSAFE
    triggers = (re.compile(r"\bacos_?\b|\basin_?\b|\batanh_?\b|\barccos_?\b|\barcsin_?\b|\barctanh_?\b"),)
    valid = [
        Valid(
            "import torch\nimport torch.nn.functional as F\n"
            "cos = F.cosine_similarity(a, b, dim=-1)\n"
            "angle = torch.acos(cos.clamp(-1 + torch.finfo(cos.dtype).eps, 1 - torch.finfo(cos.dtype).eps))\n"
        ),
        Valid("import torch\ny = torch.acos(cos.clamp(-1 + eps, 1 - eps))\n"),
        Valid("import torch\ny = torch.acos(x.clamp(-0.999, 0.999))\n"),
        Valid("import torch\ny = torch.acos(x)\n"),
        Valid("import math\ny = math.acos(cos_theta)\n"),
        Valid("import torch\ny = torch.where(c.abs() < 1, torch.acos(c), 0)\n"),
        Valid("import torch\nangle = torch.atan2(torch.linalg.norm(torch.cross(a, b, dim=-1), dim=-1), (a * b).sum(-1))\n"),
    ]
    invalid = [
        Invalid(
            "import torch\nimport torch.nn.functional as F\ncos = F.cosine_similarity(a, b, dim=-1)\nangle = torch.acos(cos)\n",
            fixed=(
                "import torch\nimport torch.nn.functional as F\ncos = F.cosine_similarity(a, b, dim=-1)\n"
                "angle = torch.acos(cos.clamp(-1 + torch.finfo(cos.dtype).eps, 1 - torch.finfo(cos.dtype).eps))\n"
            ),
        ),
        Invalid(
            "import torch\nimport torch.nn.functional as F\nu = F.normalize(x, dim=-1)\nv = F.normalize(y, dim=-1)\n"
            "theta = (u * v).sum(-1).acos()\n",
            fixed=(
                "import torch\nimport torch.nn.functional as F\nu = F.normalize(x, dim=-1)\nv = F.normalize(y, dim=-1)\n"
                "theta = (u * v).sum(-1).clamp(-1 + torch.finfo(u.dtype).eps, 1 - torch.finfo(u.dtype).eps).acos()\n"
            ),
        ),
        Invalid(
            "import torch\ntheta = torch.acos(torch.clamp(cos_theta, -1 + 1e-7, 1 - 1e-7))\n",
        ),
        Invalid(
            "import torch\nc = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))\nt = torch.asin(c.clamp(-1, 1))\n",
        ),
        Invalid(
            "import torch as T\ndef arc(cos_theta):\n    return T.acos(cos_theta)\n",
            fixed=(
                "import torch as T\ndef arc(cos_theta):\n"
                "    return T.acos(cos_theta.clamp(-1 + T.finfo(cos_theta.dtype).eps, 1 - T.finfo(cos_theta.dtype).eps))\n"
            ),
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self._init_tracking()
        self.guarded: Set[int] = set()
        # parameters of the current function (a name that is only a parameter)
        self.params: list = [set()]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().visit_FunctionDef(node)
        p = node.params
        self.params.append({q.name.value for q in list(p.posonly_params) + list(p.params) + list(p.kwonly_params)})

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().leave_FunctionDef(node)
        self.params.pop()

    def visit_Call(self, node: cst.Call) -> None:
        for f_node, _, _, _ in guarded_calls(self.ctx, node, self.scopes.lookup):
            self.guarded.add(id(f_node))
        op = torch_op(self.ctx, node)
        f = INVERSE_OPS.get(op or "")
        if f is None or id(node) in self.guarded:
            return
        x = subject(self.ctx, node)
        if x is None or not self.ctx.facts.grad_flows(node) or no_grad_value(self.ctx, x):
            return  # no gradient: the infinite derivative never meets a backward pass
        clamp = self._clamp(x)
        if clamp is not None:
            self._check_clamp(node, f, clamp)
            return
        what = self._cosine_like(x, f)
        if what is None:
            return
        hazard = (
            "is -inf/inf at ±1 and the value is NaN beyond" if f != "atanh" else "and the value are inf at ±1"
        )
        self.report(
            node,
            f"`{f}` of {what}, which reaches ±1 and exceeds it by rounding (after `F.normalize`, a vector's dot "
            f"product with itself exceeds 1 for ~16% of vectors in float16): the derivative {hazard}; clamp it "
            f"to [-1 + eps, 1 - eps] with eps = `torch.finfo(x.dtype).eps` ({fmt(self.ctx.dtype.eps)} in {self.ctx.dtype.name})",
            None if (op or "").endswith("_") else self._fix(node, x),  # in place: a fix would update a temporary
        )

    # -- clamps ----------------------------------------------------------------------
    def _clamp(self, x: cst.BaseExpression, depth: int = 0) -> Optional[cst.Call]:
        x = strip(self.ctx, x)
        if isinstance(x, cst.Call) and torch_op(self.ctx, x) in CLAMP_OPS:
            return x
        if isinstance(x, cst.Name) and depth < 3:
            value = self.scopes.last(x.value)  # `c = c.clamp(...)` guards what follows
            if value is not None:
                return self._clamp(value, depth + 1)
        return None

    def _check_clamp(self, node: cst.Call, f: str, clamp: cst.Call) -> None:
        method = is_method_call(self.ctx, clamp)
        op = torch_op(self.ctx, clamp)
        lo_name, hi_name = ("min_val", "max_val") if op == "hardtanh" else ("min", "max")
        lo = arg(clamp, 0 if method else 1, lo_name)
        hi = arg(clamp, 1 if method else 2, hi_name)
        if op == "hardtanh" and lo is None and hi is None:
            return self._margin(node, f, -1.0, 1.0)
        if lo is None or hi is None:
            return  # one-sided: the author guarded the side they care about
        lo_v, hi_v = const(lo.value), const(hi.value)
        if lo_v is None or hi_v is None:
            return  # a named margin: cannot judge
        self._margin(node, f, lo_v, hi_v, f"[{self.ctx.code(lo.value).strip()}, {self.ctx.code(hi.value).strip()}]")

    def _margin(self, node: cst.Call, f: str, lo: float, hi: float, spelled: str = "[-1, 1]") -> None:
        margin = min(lo + 1.0, 1.0 - hi)
        for dtype in self.ctx.dtypes:
            if margin >= dtype.eps:
                continue
            if margin <= 0:
                why = f"the clamp reaches ±1, where the derivative of `{f}` is infinite"
            elif margin <= dtype.eps / 4:
                why = f"1 - {fmt(margin)} rounds to exactly 1 in {dtype.name} (eps {fmt(dtype.eps)}), where the derivative of `{f}` is infinite"
            else:
                why = f"the margin {fmt(margin)} is below {dtype.name}'s eps ({fmt(dtype.eps)}), leaving the bound one or two steps from 1"
            self.report(
                node,
                f"`{f}` argument is clamped to {spelled}: {why}; use a margin of at least "
                f"`torch.finfo(x.dtype).eps`",
            )
            return

    # -- cosine-like values ------------------------------------------------------------
    def _cosine_like(self, x: cst.BaseExpression, f: str, depth: int = 0) -> Optional[str]:
        if depth > 4:
            return None
        x = strip(self.ctx, x)
        if isinstance(x, cst.Name):
            value = self.scopes.lookup(x.value)
            if value is not None:
                return self._cosine_like(value, f, depth + 1)
            entries = self.scopes.stack[-1].get(x.value)
            if _COS_NAME.match(x.value) and (entries is None or (entries == [None] and x.value in self.params[-1])):
                return f"`{x.value}`, a cosine by its name"
            return None
        if isinstance(x, cst.Call):
            op = torch_op(self.ctx, x)
            if op == "cosine_similarity":
                return "a cosine similarity"
            if (op in ("cos", "sin") and f in ("acos", "asin")) or (op == "tanh" and f == "atanh"):
                if not is_method_call(self.ctx, x) or self.ctx.resolve(x.func) is None:
                    return f"`{op}(...)`"
            # acos/asin of a dot product treats it as a cosine: the vectors are
            # meant to be unit length, even when normalised elsewhere
            any_dot = f in ("acos", "asin")
            if op in REDUCE_OPS:
                inner = subject(self.ctx, x)
                if inner is not None and self._normalized_product(inner):
                    return "a dot product of normalised vectors"
                if inner is not None and any_dot and self._product(inner):
                    return "a dot product (used as a cosine)"
            if op in PRODUCT_OPS:
                operands = [a.value for a in x.args if a.keyword is None and not isinstance(a.value, cst.SimpleString)]
                if is_method_call(self.ctx, x):
                    operands.insert(0, x.func.value)  # type: ignore[union-attr]
                if len(operands) >= 2 and all(self._normalized(o) for o in operands[:2]):
                    return "a product of normalised vectors"
                if len(operands) >= 2 and any_dot and op != "linear":
                    return "a dot product (used as a cosine)"
            return None
        if isinstance(x, cst.BinaryOperation):
            if isinstance(x.operator, cst.MatrixMultiply):
                if self._normalized(x.left) and self._normalized(x.right):
                    return "a product of normalised vectors"
                if f in ("acos", "asin"):
                    return "a dot product (used as a cosine)"
            if isinstance(x.operator, cst.Divide) and self._mentions_norm(x.right):
                return "a quotient by norms"
        return None

    def _normalized_product(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        node = strip(self.ctx, node)
        if isinstance(node, cst.Name) and depth < 3:
            value = self.scopes.lookup(node.value)
            return value is not None and self._normalized_product(value, depth + 1)
        return (
            isinstance(node, cst.BinaryOperation)
            and isinstance(node.operator, cst.Multiply)
            and self._normalized(node.left)
            and self._normalized(node.right)
        )

    def _product(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        node = strip(self.ctx, node)
        if isinstance(node, cst.Name) and depth < 3:
            value = self.scopes.lookup(node.value)
            return value is not None and self._product(value, depth + 1)
        return (
            isinstance(node, cst.BinaryOperation)
            and isinstance(node.operator, cst.Multiply)
            and const(node.left) is None
            and const(node.right) is None
        )

    def _normalized(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        node = strip(self.ctx, node)
        while isinstance(node, cst.Attribute) and node.attr.value in ("T", "mT", "H", "mH"):
            node = strip(self.ctx, node.value)
        if isinstance(node, cst.Subscript):
            node = strip(self.ctx, node.value)
        if isinstance(node, cst.Name) and depth < 3:
            value = self.scopes.lookup(node.value)
            return value is not None and self._normalized(value, depth + 1)
        if isinstance(node, cst.Call):
            return torch_op(self.ctx, node) == "normalize" and self.ctx.resolve(node.func) is not None
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide):
            return self._mentions_norm(node.right)
        return False

    def _mentions_norm(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        for sub in subtree(node, 120):
            if isinstance(sub, cst.Call) and torch_op(self.ctx, sub) in NORM_OPS:
                return True
            if isinstance(sub, cst.Name) and depth < 2:
                value = self.scopes.lookup(sub.value)
                if value is not None and self._mentions_norm(value, depth + 1):
                    return True
        return False

    # -- fix ---------------------------------------------------------------------------
    def _fix(self, node: cst.Call, x: cst.BaseExpression) -> Optional[FixSpec]:
        ref = x if is_reference(x) else _leftmost(self.ctx, x)
        if ref is None or not is_reference(ref) or getattr(ref, "lpar", None):
            return None
        torch = self.ctx.torch_name()
        eps = f"{torch}.finfo({self.ctx.code(ref)}.dtype).eps"
        bare = x.with_changes(lpar=(), rpar=()) if getattr(x, "lpar", None) else x
        inner = self.ctx.module.code_for_node(bare)
        if not isinstance(bare, _ATOMS):
            inner = f"({inner})"
        new_x = f"{inner}.clamp(-1 + {eps}, 1 - {eps})"
        target: cst.CSTNode = x
        new: "cst.CSTNode | str" = new_x
        if is_method_call(self.ctx, node) and isinstance(node.func, cst.Attribute) and node.func.value is x:
            target = node
            new = node.with_changes(func=node.func.with_changes(value=cst.parse_expression(new_x)))
        return FixSpec(
            UNSAFE,
            "Clamp the argument to [-1 + eps, 1 - eps] with the dtype's eps",
            replace=[(target, new)],
            imports=("torch",),
        )


def _leftmost(ctx, node: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """The first plain name of an expression, following receivers, first
    arguments and left operands: the tensor whose dtype the result has."""
    for _ in range(12):
        if is_reference(node):
            return node
        if isinstance(node, cst.BinaryOperation):
            node = node.left
        elif isinstance(node, cst.Call):
            first = subject(ctx, node)
            if first is None:
                return None
            node = first
        elif isinstance(node, cst.Subscript):
            node = node.value
        else:
            return None
    return None
