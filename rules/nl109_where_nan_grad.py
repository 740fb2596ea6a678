from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Set, Tuple

import libcst as cst

from nanlint.engine import children, subtree
from nanlint.finding import HIGH, MEDIUM, SAFE
from nanlint.patterns import arg, is_method_call, is_reference, number, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid
from nanlint.gradients import (
    DOMAIN_OPS,
    PURE_COND_OPS,
    _SPACES,
    strip,
    text,
    guarded_calls,
    no_grad_value,
    ScopeTracking,
)


class WhereNanGrad(ScopeTracking, Rule):
    """
    ## What it does
    Flags `torch.where(cond, f(x), other)` (or `torch.where(cond, other, f(x))`)
    where `f` has a singular point -- `log`/`log2`/`log10`/`log1p`, `sqrt`,
    `rsqrt`, `reciprocal`, a division by `x`, `x ** p` or `pow(x, p)` with a
    fractional or negative `p`, `acos`/`asin`/`atanh` -- and `cond` compares
    that same `x` (`x > 0`, `x != 0`, `x.abs() < 1`, a mask assigned from such
    a comparison) against a value near f's singular point (0; -1 for `log1p`;
    ±1 for `acos`/`asin`/`atanh`; a name like `eps`/`tol` counts as 0): the
    condition is there to keep `f` away from its singular point.

    Not flagged: conditions unrelated to `x` or far from the singular point
    (`torch.where(u >= 1 - eps, -eps, torch.log(u))`, `loss < beta`), `f`
    applied outside the `where` (`torch.sqrt(torch.where(x > 0, x, 1))`, the
    correct form), operands that carry no gradient (counts of a comparison,
    `(m > 0).sum().float()`; fresh `torch.rand(...)`; a helper's parameter
    that every call of the helper gives such a value, as a windowed
    `sinc(t)` of a `linspace`), and code where no
    gradient flows (`Facts.grad_flows`): under `torch.no_grad()` /
    `torch.inference_mode()`, in the methods of a class whose `__call__` runs
    under them (an inference pipeline), in `forward`/`backward` of a
    `torch.autograd.Function` (autograd differentiates it with the class's
    own `backward`, which records no graph), in functions named like feature
    extraction, pre/post-processing or metrics, and in
    `feature_extraction_*`/`processing_*`/`metrics` modules.

    ## Confidence
    **High** when the guarded value carries a gradient (an activation: values
    at the avoided point are ordinary); **medium** when it carries none (a
    count or a mask sum built from fresh tensors, followed through loops,
    `zip`, `split` and in-place accumulation): it reaches the avoided point
    only for an empty window or an all-padding row.

    ## Why is this bad?
    `torch.where` selects values, but autograd still differentiates both
    branches everywhere and multiplies the unselected lanes' derivative by 0.
    Where `f`'s derivative is infinite or NaN in the masked lanes, 0 * inf =
    NaN, and that NaN lands in `x.grad` (measured, torch 2.13, float16 and
    float32 alike: `torch.where(x > 0, torch.sqrt(x), 0)` has a NaN gradient
    at x = 0 and x = -1; the same holds for `log` at 0, `a / x` at 0 (NaN for
    both `a` and `x`), `acos`/`asin` at |x| >= 1). The forward result looks
    perfect, so the NaN surfaces only as NaN weights after the optimizer step.
    `nanlint confirm` proves it with a `grad-nonfinite` event at this line
    (the backward of `f` turns finite gradients into NaN); where the masked
    lanes also compute 0/0 or log(0) forward, the `new-nan`/`new-inf` event
    that `where` then hides fires at this line first.

    ## Example
    ```python
    y = torch.where(x > 0, torch.sqrt(x), 0)
    ```

    ## Use instead
    ```python
    x_safe = torch.where(x > 0, x, 1)
    y = torch.where(x > 0, torch.sqrt(x_safe), 0)
    ```
    (the "double where": the masked lanes now evaluate `f` at a harmless
    point -- 1, or 0 for `acos`/`asin`/`atanh` -- so their derivative is
    finite and the 0 that `where` multiplies it by stays 0; measured: the
    gradient is 0 in the masked lanes and unchanged elsewhere).

    ## Fix safety
    Safe: in the selected lanes `x_safe` equals `x`, so the values and the
    gradients there are unchanged; only the masked lanes' gradient changes,
    from NaN to 0. The fix is offered only when `x` is a plain name or
    attribute, every flagged `f` in the call uses that same `x` in the same
    branch, the condition contains nothing but names, literals, comparisons
    and pure torch ops (it is evaluated a second time), and the `where` is in
    a simple statement of its own line, outside any lambda, comprehension,
    conditional expression or `and`/`or` (a new line is inserted before it).
    """

    code = "NL109"
    name = "where-nan-grad"
    summary = "torch.where(cond, f(x), other) still back-propagates f's inf/NaN derivative from masked lanes: 0 * inf = NaN"
    fix_applicability = SAFE
    triggers = (re.compile(r"\bwhere\s*\("),)  # a call, not the word in a docstring
    valid = [
        Valid("import torch\nsafe = torch.where(x > 0, x, 1)\ny = torch.where(x > 0, torch.sqrt(safe), 0)\n"),
        Valid("import torch\ny = torch.sqrt(torch.where(x > 0, x, 1))\n"),
        Valid("import torch\ny = torch.where(mask, torch.log(p), 0)\n"),
        Valid("import numpy as np\ny = np.where(x > 0, np.log(x), 0)\n"),
        Valid("import torch\ny = torch.where(x > 0, x ** 2, 0)\n"),
        Valid(
            "import torch\n"
            "@torch.no_grad()\n"
            "def f(x):\n"
            "    return torch.where(x > 0, x.log(), 0)\n"
        ),
        Valid("import torch\nwith torch.no_grad():\n    y = torch.where(n != 0, a / n, 0)\n"),
    ]
    invalid = [
        Invalid(
            "import torch\ny = torch.where(x > 0, torch.sqrt(x), 0)\n",
            fixed="import torch\nx_safe = torch.where(x > 0, x, 1)\ny = torch.where(x > 0, torch.sqrt(x_safe), 0)\n",
        ),
        Invalid(
            "import torch\n\ndef f(a, n):\n    return torch.where(n == 0, 0, a / n)\n",
            fixed="import torch\n\ndef f(a, n):\n    n_safe = torch.where(n == 0, 1, n)\n    return torch.where(n == 0, 0, a / n_safe)\n",
        ),
        Invalid(
            "import torch\ntheta = torch.where(self.c.abs() < 1, torch.acos(self.c), 0.0)\n",
            fixed=(
                "import torch\nc_safe = torch.where(self.c.abs() < 1, self.c, 0)\n"
                "theta = torch.where(self.c.abs() < 1, torch.acos(c_safe), 0.0)\n"
            ),
        ),
        Invalid(
            "import torch as T\nm = p > 0\nent = -T.where(m, p * p.log(), 0).sum()\n",
            fixed="import torch as T\nm = p > 0\np_safe = T.where(m, p, 1)\nent = -T.where(m, p * p_safe.log(), 0).sum()\n",
        ),
        Invalid("import torch\nys = [torch.where(v > 0, torch.log(v), 0) for v in vs]\n"),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self._init_tracking()
        self.statement: Optional[cst.SimpleStatementLine] = None
        self.barriers = 0
        self.taken: Set[str] = set()

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self.statement = node
        self.barriers = 0

    def leave_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self.statement = None

    def _enter_barrier(self, node: cst.CSTNode) -> None:
        self.barriers += 1

    def _leave_barrier(self, node: cst.CSTNode) -> None:
        self.barriers -= 1

    visit_Lambda = visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _enter_barrier
    visit_IfExp = visit_BooleanOperation = _enter_barrier
    leave_Lambda = leave_ListComp = leave_SetComp = leave_DictComp = leave_GeneratorExp = _leave_barrier
    leave_IfExp = leave_BooleanOperation = _leave_barrier

    def visit_Call(self, node: cst.Call) -> None:
        guarded = [
            g for g in guarded_calls(self.ctx, node, self.scopes.lookup)
            if not all(no_grad_value(self.ctx, leaf) for leaf in _leaves(self.ctx, g[0]))
        ]
        if not guarded or not self.ctx.facts.grad_flows(node):
            return
        first, f, x, _ = guarded[0]
        spelled = _SPACES.sub(" ", self.ctx.code(first).strip())
        if len(spelled) > 50:
            spelled = f"{f}(...)"
        cond = arg(node, 0, "condition")
        assert cond is not None
        cond_text = _SPACES.sub(" ", self.ctx.code(cond.value).strip())
        if len(cond_text) > 40:
            cond_text = cond_text[:37] + "..."
        # a guarded value with no gradient of its own (a count, a mask sum) reaches the
        # avoided point only for an empty window or an all-padding row
        rare = no_grad_value(self.ctx, x)
        self.report(
            node,
            f"`torch.where({cond_text}, ...)` masks `{spelled}` but autograd still differentiates it in the "
            f"masked lanes, where its derivative is inf/NaN at the point the condition avoids"
            f"{' (here a count: 0 for an empty or all-padding row)' if rare else ''}: 0 * inf = NaN "
            f"in the gradient; evaluate `{f}` on a value made safe by a first `where`",
            self._fix(node, guarded),
            confidence=MEDIUM if rare else HIGH,
        )

    def _fix(self, where: cst.Call, guarded) -> Optional[FixSpec]:
        if self.statement is None or self.barriers or len(self.statement.body) != 1:
            return None
        xs = {text(self.ctx, x) for _, _, x, _ in guarded}
        branches = {is_true for _, _, _, is_true in guarded}
        fillers = {DOMAIN_OPS.get(f, "1") for _, f, _, _ in guarded}
        if len(xs) != 1 or len(branches) != 1 or len(fillers) != 1:
            return None
        x = guarded[0][2]
        if not is_reference(x) or getattr(x, "lpar", None):
            return None
        cond = arg(where, 0, "condition")
        assert cond is not None
        if not self._pure(cond.value):
            return None
        x_text = self.ctx.code(x)
        filler = fillers.pop()
        safe = self._new_name(x_text.rsplit(".", 1)[-1] + "_safe")
        torch = self.ctx.torch_name()
        cond_text = self.ctx.code(cond.value)
        if branches.pop():
            line = f"{safe} = {torch}.where({cond_text}, {x_text}, {filler})"
        else:
            line = f"{safe} = {torch}.where({cond_text}, {filler}, {x_text})"
        return FixSpec(
            SAFE,
            f"Evaluate the masked function on `{safe}`, a copy of `{x_text}` that is {filler} in the masked lanes",
            replace=[(x_node, safe) for _, _, x_node, _ in guarded],
            insert_before=[(self.statement, line)],
            imports=("torch",),
        )

    def _pure(self, cond: cst.BaseExpression) -> bool:
        for node in subtree(cond, 400):
            if isinstance(node, cst.Call):
                if torch_op(self.ctx, node) not in PURE_COND_OPS:
                    return False
            elif isinstance(node, (cst.NamedExpr, cst.Lambda, cst.Await, cst.Yield)):
                return False
        return True

    def _new_name(self, base: str) -> str:
        name = base
        index = 2
        while name in self.taken or re.search(rf"\b{re.escape(name)}\b", self.ctx.source):
            name = f"{base}{index}"
            index += 1
        self.taken.add(name)
        return name


def _leaves(ctx, node: cst.CSTNode) -> List[cst.BaseExpression]:
    """The operands of f(x): ``[a, x]`` for ``a / x``, ``[x]`` for ``log(x)``,
    ``[x, p]`` for ``x ** p``."""
    if isinstance(node, cst.BinaryOperation):
        return [node.left, node.right]
    if isinstance(node, cst.Call):
        out = [a.value for a in node.args if a.keyword is None or a.keyword.value in ("input", "other", "exponent")]
        if is_method_call(ctx, node):
            out.append(node.func.value)  # type: ignore[union-attr]
        return out
    return []
