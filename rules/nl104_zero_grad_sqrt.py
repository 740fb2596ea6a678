from __future__ import annotations

import re
from typing import Optional, Set, Tuple

import libcst as cst

from nanlint.finding import HIGH, MEDIUM, UNSAFE
from nanlint.patterns import additive_terms, arg, is_method_call, is_reference, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid
from nanlint.engine import subtree
from nanlint.gradients import (
    ScopeTracking, const, guarded_calls, no_grad_value, strip, text,
)

ROOT_OPS = frozenset({"sqrt", "sqrt_"})
POW_OPS = frozenset({"pow", "pow_", "float_power"})
SUM_OPS = frozenset({"sum", "nansum"})
MEAN_OPS = frozenset({"mean", "nanmean"})
# evidence that an operand is a Python number, not a tensor
_SCALAR_HEADS = frozenset({"math", "np", "numpy", "random", "statistics"})
_SCALAR_CALLS = frozenset({"len", "float", "int", "item", "size", "numel", "dim", "tolist"})
_SCALAR_ATTRS = frozenset({"shape", "ndim"})
_SCALAR_READS = frozenset({"item", "tolist", "numpy"})
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript)
# `** 0.5`, `** .5`, `** 5e-1`, `** (1 / 2)`, `** (1.0/2)`
_HALF_POWER = re.compile(r"\*\*\s*\(*\s*(?:0*\.5|5\.?0*[eE]-0*1|1(?:\.0*)?\s*/\s*2)")


class Form:
    """A value that can be exactly 0 (or, for differences, negative)."""

    def __init__(self, kind: str, operand: Optional[cst.BaseExpression], tensor: bool,
                 norm: Optional[Tuple[cst.BaseExpression, cst.Call]] = None) -> None:
        self.kind = kind  # human description
        self.operand = operand  # the squared tensor, when there is one
        self.tensor = tensor  # visibly a tensor computation (a reduction, a torch op)
        self.norm = norm  # (t, sum call) when the value is `(t ** 2).sum(...)` written inline


class ZeroGradSqrt(ScopeTracking, Rule):
    """
    ## What it does
    Flags `torch.sqrt(v)`, `v.sqrt()`, `v ** 0.5`, `v.pow(0.5)` and
    `torch.pow(v, 0.5)` where `v` is, with no guard, a value that is exactly
    0 at an ordinary input: a sum or mean of squares (`(x ** 2).sum(-1)`,
    `x.pow(2).mean()`, `(a - b).square().sum()`, `x ** 2 + y ** 2`), a
    square (`(a - b) ** 2`), a variance (`x.var()`, `E[x²] - E[x]²`),
    `1 - c ** 2`, or squared distances expanded through a matrix product
    (`a2 + b2.T - 2 * a @ b.T`, with `a2`, `b2` sums of squares) -- written
    inline or through a local variable assigned once.

    Not flagged: the built-in norms (`x.norm()`, `torch.linalg.vector_norm`,
    `torch.dist`, `F.pairwise_distance`, `x.std()`), whose gradient at 0 is 0
    (measured); values with a guard (`v + eps`, `v.clamp_min(...)`): the
    too-small-eps form, such as `sqrt(v + 1e-12)` whose eps rounds to 0 in
    float16, is NL001's; `math.sqrt`/`np.sqrt`, square roots of sizes
    (`head_dim ** 0.5`) and of sums with a constant term
    (`noise ** 2 + self.sigma ** 2`); values with no gradient (fresh
    `torch.randn(...)`, counts of a comparison) and results read as Python
    numbers (`.item()`); `sqrt(v)` inside a `torch.where` whose condition
    guards `v` (NL109's); and code where no gradient flows
    (`Facts.grad_flows`): under `torch.no_grad()`, `torch.inference_mode()`
    or `torch.set_grad_enabled(False)`, in the methods of a class whose
    `__call__` runs under them (an inference pipeline), in `forward`/`backward`
    of a `torch.autograd.Function` (differentiated by its own `backward`), in a
    method of a plain data class that updates its own tensors in place (boxes scaled in
    place), for a result only read as integers (`.long()`, `floor`), in
    functions named like feature extraction, pre/post-processing or metrics,
    and in `feature_extraction_*`/`processing_*`/`metrics` modules.

    ## Confidence
    **High** for an all-pairs distance (`x[:, None] - y[None]`,
    `x.unsqueeze(1) - y.unsqueeze(0)`, the expanded form above): whenever the
    two sets share a point (always, for the distances of a set to itself)
    the diagonal is exactly 0; the expanded form also cancels to slightly
    below 0 there, where the root itself is NaN.
    **Medium** otherwise: a norm of one vector, a distance between two
    points, `sqrt(re**2 + im**2)`, `1 - c**2` or a variance is exactly 0 only
    for a zero vector, coincident points, a silent input or a constant row --
    real, but rare.

    ## Why is this bad?
    The derivative of `sqrt(v)` is `1 / (2 sqrt(v))`, which is inf at v = 0,
    and the chain rule multiplies it by the derivative of `v`, which is 0
    there (`2x` at x = 0): inf * 0 = NaN. Measured on torch 2.13 in float16,
    bfloat16 and float32 alike: `torch.sqrt((x ** 2).sum())` at x = 0 and
    `torch.sqrt(x.var())` on a constant row give NaN gradients, and
    `sqrt(1 - c ** 2)` at c = 1 gives -inf; `torch.linalg.vector_norm(x)` and
    `x.std()` give 0. A zero vector is ordinary (padding embeddings, a
    distance from a point to itself, a dead feature), and one NaN gradient
    turns every weight NaN at the next optimizer step. In float16 the
    hand-written form also overflows: `(x ** 2).sum()` is inf for |x| above
    255.9, where `vector_norm` of 300s is 600. `nanlint confirm` proves it
    with a `grad-nonfinite` event at this line (the square root's backward
    turns finite gradients into NaN/inf).

    ## Example
    ```python
    dist = torch.sqrt(((a - b) ** 2).sum(-1))
    sin = (1 - cos ** 2).sqrt()
    ```

    ## Use instead
    ```python
    dist = torch.linalg.vector_norm(a - b, dim=-1)
    sin = (1 - cos ** 2).clamp_min(torch.finfo(cos.dtype).tiny).sqrt()
    ```

    ## Fix safety
    Unsafe. A square root of an inline sum of squares `(t ** 2).sum(dim,
    keepdim)` becomes `torch.linalg.vector_norm(t, dim=dim,
    keepdim=keepdim)`: the same value in exact arithmetic, computed more
    accurately (and without the float16 overflow), with a 0 gradient at 0
    instead of NaN. Any other form gets `.clamp_min(torch.finfo(r.dtype).tiny)`
    inside the root, where `r` is the value itself when it is a plain name,
    else the squared tensor: values below the smallest normal number (6.10e-5
    in float16, 1.18e-38 in float32) are raised to it, so the result is at
    least 7.8e-3 in float16 instead of 0, and a slightly negative
    difference (`1 - c ** 2` with |c| rounded above 1) no longer gives NaN.
    No fix is offered when no plain reference gives the dtype.
    """

    code = "NL104"
    name = "zero-grad-sqrt"
    summary = "sqrt of a value that can be exactly 0 (a sum of squares, a variance, 1 - c**2) has a NaN gradient at 0"
    fix_applicability = UNSAFE
    # sqrt, pow(…, 0.5), ** 0.5 / ** .5 / ** (1/2)
    triggers = (re.compile(r"\bsqrt_?\b|\bpow_?\b|\bfloat_power_?\b"), _HALF_POWER)
    valid = [
        Valid("import torch\nn = x.norm(dim=-1)\n"),
        Valid("import torch\nn = torch.linalg.vector_norm(a - b, dim=-1)\n"),
        Valid("import torch\nn = torch.sqrt((x ** 2).sum(-1) + 1e-6)\n"),
        Valid("import torch\nn = torch.sqrt((x ** 2).sum(-1).clamp_min(1e-6))\n"),
        Valid("import math\nscale = math.sqrt(head_dim)\n"),
        Valid("import torch\nscale = head_dim ** 0.5\n"),
        Valid("import torch\nscale = torch.sqrt(torch.tensor(d_k, dtype=torch.float32))\n"),
        Valid("import torch\nstd = x.std(-1)\n"),
        Valid("import torch\n@torch.no_grad()\ndef stats(x):\n    return x.var(0).sqrt()\n"),
        Valid("import torch\nwith torch.no_grad():\n    n = ((w ** 2).sum(1)) ** 0.5\n"),
        Valid("import torch\ns = (x ** 2).sum(-1)\nd = torch.where(s > 0, s.sqrt(), 0)\n"),
        Valid("import torch\ns = (x ** 2).sum(-1)\ns = s + 1e-6\nd = s.sqrt()\n"),
        Valid("import torch\ny = torch.sqrt(x)\n"),
        Valid(
            "import torch\nclass Boxes:\n    def scale(self, sx, sy):\n        c = torch.cos(self.tensor[:, 4])\n"
            "        self.tensor[:, 2] *= torch.sqrt((sx * c) ** 2 + (sy * c) ** 2)\n"
        ),
        Valid("import torch\nk = torch.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).long()\n"),
        # all-pairs distances read only through sort indices: no gradient leaves them
        Valid("import torch\ndef nearest(x):\n    d = ((x[:, None] - x[None]) ** 2).sum(-1) ** 0.5\n"
              "    return torch.sort(d, dim=-1).indices[:, 1]\n"),
        # look-alikes of the expanded distance: a constant added, the cross term not a product
        Valid("import torch\na2 = (a ** 2).sum(-1, keepdim=True)\nd = torch.sqrt(a2 + 1.0 - 2 * a @ b.T)\n"),
        Valid("import torch\na2 = (a ** 2).sum(-1, keepdim=True)\nb2 = (b ** 2).sum(-1)\n"
              "d = torch.sqrt(a2 + b2 - 2 * a)\n"),
    ]
    invalid = [
        Invalid(
            "import torch\ndist = torch.sqrt(((a - b) ** 2).sum(-1))\n",
            fixed="import torch\ndist = torch.linalg.vector_norm(a - b, dim=-1)\n",
        ),
        Invalid(
            "import torch\nn = x.pow(2).sum(dim=-1, keepdim=True).sqrt()\n",
            fixed="import torch\nn = torch.linalg.vector_norm(x, dim=-1, keepdim=True)\n",
        ),
        Invalid(
            "import torch\nsin = (1 - cos ** 2).sqrt()\n",
            fixed="import torch\nsin = (1 - cos ** 2).clamp_min(torch.finfo(cos.dtype).tiny).sqrt()\n",
        ),
        Invalid(
            "import torch\nstd = torch.sqrt(x.var(dim=0))\n",
            fixed="import torch\nstd = torch.sqrt(x.var(dim=0).clamp_min(torch.finfo(x.dtype).tiny))\n",
        ),
        Invalid(
            "import torch as T\n\ndef rms(x):\n    ms = x.pow(2).mean(-1, keepdim=True)\n    return x / ms ** 0.5\n",
            fixed=(
                "import torch as T\n\ndef rms(x):\n    ms = x.pow(2).mean(-1, keepdim=True)\n"
                "    return x / ms.clamp_min(T.finfo(ms.dtype).tiny) ** 0.5\n"
            ),
        ),
        Invalid(
            "import torch\nr = torch.pow(dx ** 2 + dy ** 2, 0.5)\n",
            fixed="import torch\nr = torch.pow((dx ** 2 + dy ** 2).clamp_min(torch.finfo(dx.dtype).tiny), 0.5)\n",
        ),
        Invalid(
            "import torch\ndef pairwise(a, b):\n"
            "    a2 = torch.sum(a.pow(2), dim=-1, keepdim=True)\n"
            "    b2 = torch.sum(b.pow(2), dim=-1, keepdim=True)\n"
            "    ab = torch.matmul(a, b.transpose(1, 2))\n"
            "    dist = a2 + b2.transpose(1, 2) - 2 * ab\n"
            "    return torch.sqrt(dist)\n",
            fixed="import torch\ndef pairwise(a, b):\n"
            "    a2 = torch.sum(a.pow(2), dim=-1, keepdim=True)\n"
            "    b2 = torch.sum(b.pow(2), dim=-1, keepdim=True)\n"
            "    ab = torch.matmul(a, b.transpose(1, 2))\n"
            "    dist = a2 + b2.transpose(1, 2) - 2 * ab\n"
            "    return torch.sqrt(dist.clamp_min(torch.finfo(dist.dtype).tiny))\n",
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self._init_tracking()
        self.guarded: Set[int] = set()
        # square roots whose result is read as a Python number (`.item()`, `float(...)`)
        self.consumed: Set[int] = set()

    # -- detection ---------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in _SCALAR_READS and not node.args:
            self.consumed.add(id(strip(self.ctx, func.value)))
        elif isinstance(func, cst.Name) and func.value in ("float", "int") and len(node.args) == 1:
            self.consumed.add(id(strip(self.ctx, node.args[0].value)))
        for f_node, _, _, _ in guarded_calls(self.ctx, node, self.scopes.lookup):
            self.guarded.add(id(f_node))
        op = torch_op(self.ctx, node)
        if op in ROOT_OPS:
            x = subject(self.ctx, node)
            torch_spelled = True  # neither Python numbers nor NumPy arrays have .sqrt()/.pow()
        elif op in POW_OPS:
            exponent = arg(node, 0 if is_method_call(self.ctx, node) else 1, "exponent")
            if exponent is None or const(exponent.value) != 0.5:
                return
            x = subject(self.ctx, node)
            torch_spelled = True
        else:
            return
        if x is not None:
            self._check(node, x, torch_spelled)

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Power) or const(node.right) != 0.5:
            return
        if not _HALF_POWER.search(self.ctx.code(node)):
            return  # an unusual spelling of 1/2: keep in step with the text trigger
        self._check(node, node.left, False)

    def _check(self, node: cst.CSTNode, x: cst.BaseExpression, torch_spelled: bool) -> None:
        if id(node) in self.guarded or id(node) in self.consumed:
            return
        form = self._form(x)
        if form is None:
            return
        if form.operand is not None and no_grad_value(self.ctx, form.operand):
            return  # `torch.randn(...)`, counts of a comparison: no gradient flows
        if not (torch_spelled or form.tensor):
            return  # `((x1 - x2) ** 2 + ...) ** 0.5` may be Python numbers
        if form.operand is not None and self._scalar(form.operand):
            return
        if not self.ctx.facts.grad_flows(node):
            return
        if form.kind == "a variance":
            advice = "use `.std(...)` (gradient 0 on a constant input) or clamp the value inside the root"
        elif form.kind == _EXPANDED or form.kind.startswith(("a variance", "`1 -")):
            advice = "clamp the value inside the root (rounding can also make it negative: NaN)"
        else:
            advice = "use `torch.linalg.vector_norm` (gradient 0 at 0) or clamp the value inside the root"
        pairwise = form.kind == _EXPANDED or (
            form.operand is not None and self._pairwise(form.operand))
        when = (
            "an all-pairs distance, which is exactly 0 wherever a point meets itself"
            if pairwise else "which is exactly 0 for a zero vector, coincident points or a constant row"
        )
        self.report(
            node,
            f"square root of {form.kind}, {when}: the derivative "
            f"1/(2*sqrt(v)) is inf at 0 and the chain rule makes the gradient NaN (inf * 0) in every dtype; "
            f"{advice}",
            None if _in_place(node) else self._fix(node, x, form),
            confidence=HIGH if pairwise else MEDIUM,
        )

    def _pairwise(self, t: cst.BaseExpression, depth: int = 0) -> bool:
        """``a[:, None] - b[None, :]`` (or ``unsqueeze``): a difference
        broadcast over all pairs, read through local names."""
        t = strip(self.ctx, t)
        if isinstance(t, cst.Name) and depth < 4:
            value = self.scopes.lookup(t.value)
            return value is not None and self._pairwise(value, depth + 1)
        return (
            isinstance(t, cst.BinaryOperation) and isinstance(t.operator, cst.Subtract)
            and _broadcast(t.left) and _broadcast(t.right)
        )

    def _form(self, x: cst.BaseExpression, depth: int = 0) -> Optional[Form]:
        if depth > 4:
            return None
        x = strip(self.ctx, x)
        if isinstance(x, cst.Name):
            value = self.scopes.lookup(x.value)
            if value is None:
                return None
            form = self._form(value, depth + 1)
            if form is not None:
                form = Form(form.kind, form.operand, form.tensor)  # no inline norm fix through a name
            return form
        square = self._square(x)
        if square is not None:
            return Form("a square", square, self._tensorish(square))
        if isinstance(x, cst.Call):
            op = torch_op(self.ctx, x)
            if op in SUM_OPS or op in MEAN_OPS:
                inner = subject(self.ctx, x)
                if inner is None:
                    return None
                inner_form = self._reduced(inner, depth)
                if inner_form is None:
                    return None
                what = "a sum of squares" if op in SUM_OPS else "a mean of squares"
                norm = None
                bare = strip(self.ctx, inner)
                if op == "sum" and bare is inner and self._square(inner) is not None:
                    norm = (self._square(inner), x)  # type: ignore[assignment]
                return Form(what, inner_form.operand, True, norm)
            if op == "var" and not self._has_keyword(x, "out"):
                return Form("a variance", subject(self.ctx, x), True)
            return None
        if isinstance(x, cst.BinaryOperation) and self._expanded_distance(x, depth):
            return Form(_EXPANDED, None, True)
        if isinstance(x, cst.BinaryOperation):
            if isinstance(x.operator, cst.Add):
                terms = additive_terms(x) or []
                forms = [self._form(t, depth + 1) for t in terms]
                if any(f is not None and f.operand is not None and self._constant(f.operand) for f in forms):
                    return None  # `noise ** 2 + self.sigma ** 2` is never 0
                if all(f is not None and f.kind != "a variance" for f in forms):
                    operand = next((f.operand for f in forms if f is not None and f.operand is not None), None)
                    return Form("a sum of squares", operand, any(f.tensor for f in forms if f is not None))
                return None
            if isinstance(x.operator, cst.Subtract):
                square = self._square(x.right)
                if square is None:
                    return None
                if const(x.left) == 1 and not self._clamped(square):
                    return Form("`1 - c ** 2`", square, self._tensorish(square))
                left = self._form(x.left, depth + 1)
                if left is not None and left.kind == "a mean of squares":
                    return Form("a variance written as E[x²] - E[x]²", square, True)
        return None

    def _expanded_distance(self, x: cst.BinaryOperation, depth: int) -> bool:
        """``|a|² + |b|² - 2 a·b`` (``a2 - 2 * a @ b.T + b2.T``): the squared
        distances of all pairs through a matrix product, exactly 0 wherever a
        point meets itself and, by cancellation, sometimes below 0."""
        terms = _signed_terms(x)
        if terms is None or len(terms) < 3:
            return False
        product = squares = 0
        for sign, term in terms:
            if sign < 0 and self._twice_product(term, depth):
                product += 1
                continue
            form = self._form(_untransposed(term), depth + 1)
            if sign > 0 and form is not None and form.kind in ("a sum of squares", "a mean of squares"):
                squares += 1
            else:
                return False
        return product == 1 and squares >= 1

    def _twice_product(self, term: cst.BaseExpression, depth: int) -> bool:
        """``2 * a @ b.T``, ``2 * torch.matmul(a, b.t())``, ``2 * ab`` (a name bound to one)."""
        term = strip(self.ctx, term)
        if not (isinstance(term, cst.BinaryOperation) and isinstance(term.operator, cst.Multiply)):
            return False
        for two, other in ((term.left, term.right), (term.right, term.left)):
            if const(two) == 2:
                return self._product(other, depth)
        return False

    def _product(self, node: cst.BaseExpression, depth: int) -> bool:
        node = strip(self.ctx, node)
        if isinstance(node, cst.Name) and depth < 4:
            value = self.scopes.lookup(node.value)
            return value is not None and self._product(value, depth + 1)
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.MatrixMultiply):
            return True
        return isinstance(node, cst.Call) and torch_op(self.ctx, node) in _PRODUCT_OPS

    def _reduced(self, inner: cst.BaseExpression, depth: int) -> Optional[Form]:
        """The operand of a sum/mean: a square, or a name bound to one."""
        bare = strip(self.ctx, inner)
        square = self._square(bare)
        if square is not None:
            return Form("a square", square, True)
        if isinstance(bare, cst.Name):
            value = self.scopes.lookup(bare.value)
            if value is not None and depth < 4:
                return self._reduced(value, depth + 1)
        return None

    def _square(self, x: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        """``t`` for ``t ** 2``, ``t.pow(2)``, ``torch.pow(t, 2)``, ``t.square()``,
        ``torch.square(t)``, ``t * t``."""
        if isinstance(x, cst.BinaryOperation):
            if isinstance(x.operator, cst.Power) and const(x.right) == 2:
                return x.left
            if isinstance(x.operator, cst.Multiply) and text(self.ctx, x.left) == text(self.ctx, x.right):
                return x.left
            return None
        if isinstance(x, cst.Call):
            op = torch_op(self.ctx, x)
            if op == "square":
                return subject(self.ctx, x)
            if op == "pow":
                exponent = arg(x, 0 if is_method_call(self.ctx, x) else 1, "exponent")
                if exponent is not None and const(exponent.value) == 2:
                    return subject(self.ctx, x)
        return None

    def _constant(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """A literal or a module attribute/config value (``self.sigma_data``,
        ``config.eps``, a name bound to one): a positive hyperparameter."""
        node = strip(self.ctx, node)
        if const(node) is not None:
            return True
        if isinstance(node, cst.Name) and depth < 3:
            value = self.scopes.lookup(node.value)
            return value is not None and self._constant(value, depth + 1)
        if isinstance(node, cst.Attribute):
            head = node
            while isinstance(head, cst.Attribute):
                head = head.value
            return isinstance(head, cst.Name) and head.value in ("self", "config", "cfg", "args", "math")
        return False

    def _clamped(self, node: cst.BaseExpression) -> bool:
        node = strip(self.ctx, node)
        return isinstance(node, cst.Call) and torch_op(self.ctx, node) in ("clamp", "clip", "hardtanh", "tanh", "sigmoid")

    def _tensorish(self, node: cst.BaseExpression) -> bool:
        for sub in subtree(node, 100):
            if isinstance(sub, cst.Call):
                qualified, method = self.ctx.callee(sub)
                if qualified is not None and torch_op(self.ctx, sub) is not None:
                    return True
        return False

    def _scalar(self, node: cst.BaseExpression) -> bool:
        """The squared value is visibly a Python number (a size, a shape, `.item()`)."""
        if isinstance(node, (cst.Integer, cst.Float)):
            return True
        for sub in subtree(node, 100):
            if isinstance(sub, cst.Call):
                func = sub.func
                name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
                if name in _SCALAR_CALLS:
                    return True
                head = func
                while isinstance(head, cst.Attribute):
                    head = head.value
                if isinstance(head, cst.Name) and head.value in _SCALAR_HEADS and head is not func:
                    return True
            elif isinstance(sub, cst.Attribute) and sub.attr.value in _SCALAR_ATTRS:
                return True
        return False

    def _has_keyword(self, call: cst.Call, name: str) -> bool:
        return any(a.keyword is not None and a.keyword.value == name for a in call.args)

    # -- fix -----------------------------------------------------------------------
    def _fix(self, node: cst.CSTNode, x: cst.BaseExpression, form: Form) -> Optional[FixSpec]:
        torch = self.ctx.torch_name()
        if form.norm is not None and x is form.norm[1]:
            new = self._norm(form.norm[0], form.norm[1])
            if new is not None:
                return FixSpec(
                    UNSAFE,
                    "Use `torch.linalg.vector_norm`, whose gradient at 0 is 0",
                    replace=[(node, new)],
                    imports=("torch",),
                )
        ref = x if is_reference(x) else form.operand
        if ref is None:
            return None
        ref = _bare(ref)
        if not is_reference(ref):
            return None
        inner = self.ctx.module.code_for_node(_bare(x))
        if not isinstance(_bare(x), _ATOMS):
            inner = f"({inner})"
        new_x = f"{inner}.clamp_min({torch}.finfo({self.ctx.code(ref)}.dtype).tiny)"
        # a receiver or a power's base is replaced with its parent, so that its
        # own parentheses are not doubled: `(1 - c ** 2).sqrt()`
        target: cst.CSTNode = x
        new: cst.CSTNode | str = new_x
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.value is x:
            target = node
            new = node.with_changes(func=node.func.with_changes(value=cst.parse_expression(new_x)))
        elif isinstance(node, cst.BinaryOperation) and node.left is x:
            target = node
            new = node.with_changes(left=cst.parse_expression(new_x))
        return FixSpec(
            UNSAFE,
            "Clamp the value inside the square root at the dtype's smallest normal number",
            replace=[(target, new)],
            imports=("torch",),
        )

    def _norm(self, t: cst.BaseExpression, call: cst.Call) -> Optional[str]:
        method = is_method_call(self.ctx, call)
        dim = arg(call, 0 if method else 1, "dim")
        keepdim = arg(call, 1 if method else 2, "keepdim")
        known = {id(a) for a in (dim, keepdim) if a is not None}
        if not method:
            first = arg(call, 0, "input")
            if first is not None:
                known.add(id(first))
        if any(id(a) not in known for a in call.args):
            return None  # dtype=, out=, *args
        torch = self.ctx.torch_name()
        parts = [self.ctx.module.code_for_node(_bare(t))]
        if dim is not None:
            parts.append(f"dim={self.ctx.module.code_for_node(dim.value)}")
        if keepdim is not None:
            parts.append(f"keepdim={self.ctx.module.code_for_node(keepdim.value)}")
        return f"{torch}.linalg.vector_norm({', '.join(parts)})"


def _broadcast(node: cst.BaseExpression) -> bool:
    """``x[:, None]``, ``x[None]``, ``x.unsqueeze(1)``: a new axis for all pairs."""
    if isinstance(node, cst.Subscript):
        return any(
            isinstance(e.slice, cst.Index) and isinstance(e.slice.value, cst.Name) and e.slice.value.value == "None"
            for e in node.slice
        )
    return isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "unsqueeze"


def _in_place(node: cst.CSTNode) -> bool:
    """``s.sqrt_()``/``s.pow_(0.5)``: a fix would move the update onto a temporary."""
    return (
        isinstance(node, cst.Call)
        and isinstance(node.func, (cst.Attribute, cst.Name))
        and (node.func.attr.value if isinstance(node.func, cst.Attribute) else node.func.value).endswith("_")
    )


def _bare(node: cst.BaseExpression) -> cst.BaseExpression:
    if getattr(node, "lpar", None):
        return node.with_changes(lpar=(), rpar=())
    return node


#: the kind of a squared distance written through a matrix product: all pairs, below 0 by cancellation
_EXPANDED = "a squared distance expanded as |a|² + |b|² - 2 a·b"
#: products of two tensors: the cross term of an expanded distance
_PRODUCT_OPS = frozenset({"matmul", "mm", "bmm", "einsum", "dot", "inner"})


def _untransposed(node: cst.BaseExpression) -> cst.BaseExpression:
    """``b2.t()``, ``b2.T``, ``b2.transpose(1, 2)``: the same values, placed for broadcasting."""
    while True:
        if isinstance(node, cst.Attribute) and node.attr.value in ("T", "mT"):
            node = node.value
        elif (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
              and node.func.attr.value in ("t", "transpose", "permute", "unsqueeze", "view", "reshape")):
            node = node.func.value
        else:
            return node


def _signed_terms(node: cst.BaseExpression, sign: int = 1, depth: int = 0):
    """The terms of a chain of ``+`` and ``-`` with their signs, or None when it is too deep."""
    if depth > 8:
        return None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Subtract)) and (
            depth == 0 or not node.lpar):
        left = _signed_terms(node.left, sign, depth + 1)
        right = _signed_terms(node.right, -sign if isinstance(node.operator, cst.Subtract) else sign, depth + 1)
        return None if left is None or right is None else left + right
    return [(sign, node)]
