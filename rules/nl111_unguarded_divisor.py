from __future__ import annotations

import re
from typing import Dict, List, Optional, Set, Tuple

import libcst as cst

from nanlint.analysis.values import HOST, INTEGER
from nanlint.engine import children, subtree
from nanlint.finding import LOW, SAFE
from nanlint.patterns import arg, is_method_call, last_name, look_through, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid

#: method calls that keep a count's, a norm's or a spread's zeros
_KEEPS_ZEROS = frozenset({
    "float", "double", "half", "bfloat16", "long", "int", "to", "type", "type_as", "detach", "clone",
    "unsqueeze", "view", "reshape", "expand", "expand_as", "view_as", "reshape_as", "squeeze", "flatten",
    "contiguous",
})
#: a mask by name, where its dtype is not shown (a float 0/1 mask): the only name heuristic here
_MASK_NAME = re.compile(r"(?:^|_)(?:\w*masks?|valid\w*|keep|nonpad|non_pad|not_pad\w*|is_\w+)$", re.IGNORECASE)
#: names of a statistic's maximum and minimum (``max``, ``x_max``, ``vmax``; ``min``...)
_MAX_NAME = re.compile(r"^(?:v?max|maxs|\w+_max|max_\w+)$", re.IGNORECASE)
_MIN_NAME = re.compile(r"^(?:v?min|mins|\w+_min|min_\w+)$", re.IGNORECASE)

COUNT, SPREAD, NORM, RANGE = "count", "spread", "norm", "range"
#: what a line assigning a count, a spread, a norm or an extreme to a name shows
_STATISTIC_TEXT = r"\.(?:sum|std|norm|count_nonzero|vector_norm)\s*\(|\b(?:std|norm|a?max|a?min)\b|\[\s*[\"']m(?:ax|in)[\"']"
_DIVISIONS = frozenset({"div", "div_", "true_divide", "true_divide_", "divide"})
_FINITENESS = frozenset({"isinf", "isnan", "isfinite", "isposinf", "isneginf"})

_WHY = {
    COUNT: "a count that is 0 when the mask selects nothing (an all-padding batch, an image without targets)",
    SPREAD: "a standard deviation that is 0 for a constant input (a blank image, a fully masked row, a batch of one "
            "repeated value)",
    NORM: "the norm of a difference, 0 for two coincident points",
    RANGE: "a range `max - min` that is 0 for a constant input (a feature that never varies)",
}


class UnguardedDivisor(Rule):
    """
    ## What it does
    Flags a division (`a / d`, `a /= d`, `torch.div(a, d)`, `a.div(d)`) whose
    divisor `d` has no guard at all and is one of four values that are
    exactly 0 for an input a batch can plausibly hold:

    - **a count**: `mask.sum()`, `torch.sum(m)`, `m.count_nonzero()` of a mask
      (a boolean or integer tensor: a comparison, `~m`, `.bool()`/`.long()`;
      or, where the dtype is not shown, a name like `mask`, `*_mask`,
      `valid*`, `keep`, `nonpad`, `is_*` -- the only name heuristic here) --
      0 for an all-padding batch or an image without targets;
    - **a standard deviation**: `x.std()`, `torch.std(x)` -- 0 for a constant
      input;
    - **a norm of a difference**: `(a - b).norm()`, `torch.norm(x - y)`,
      `torch.linalg.norm`/`vector_norm` of a difference or of a name bound to
      one -- 0 for two coincident points;
    - **a range** `max - min`: both sides calls of `max`/`amax` and
      `min`/`amin`, or names bound to them or read from statistics
      (`stats["max"]`), or named like them (`x_max - x_min`) -- 0 for a
      constant feature.

    The divisor is followed through local names (`n = mask.sum()`), casts and
    reshapes (`.float()`, `.unsqueeze(-1)`, `[:, None]`).

    Not flagged: any guard -- a clamp, `max`/`maximum`, an added eps or
    `torch.where` anywhere in the divisor (`mask.sum().clamp(min=1)`,
    `x.std() + 1e-6`, `F.normalize(x)`); a divisor changed in place before
    (`n.clamp_(min=1)`, `n[n == 0] = 1`, `n += eps`); a division in a
    function whose `if`/`while`/`assert`/conditional expression or
    `torch.where` condition tests the divisor or its mask (`if n > 0:`,
    `if not mask.any(): return`, `torch.where(g_norm > 0, w_norm / g_norm, 1)`
    on the next line), other than for finiteness (`assert not
    torch.isinf(std).any()`); a result cleaned by `nan_to_num`; Python
    numbers (`len(x)`, `.item()`, `.numel()`: dividing by 0 raises
    `ZeroDivisionError` instead of hiding a NaN) and NumPy arrays; a sum
    of anything but a mask (`w / w.sum()` normalising weights or
    probabilities); a variance (a divisor `var` is not the bug, its
    `sqrt(var + eps)` is NL001's); the norm of anything but a difference
    (`emb / emb.norm(dim=-1, keepdim=True)` of a learned projection, which no
    real input makes exactly 0).

    ## Confidence
    **Low**, always, and the rule is **off by default** (select it with
    `--extend-select NL111` and show it with `--min-confidence low`): the
    divisor is 0 only for an input that is not ordinary (an empty mask, a
    constant row, coincident points), and whether the data this code gets
    can hold one is nothing the code shows. Real fixes in public training
    code guard exactly these divisions (`num_tokens = loss_mask.sum()`
    divided unguarded until a fully masked micro-batch of supervised
    fine-tuning turned the loss to NaN; `a / a.std()` of a fully masked
    activation; min-max normalisation of a constant feature; the IoU of two
    empty masks), but on 20 of its findings in real code drawn at random,
    two readers judged 0 true, 1-2 arguable and 18-19 not reachable: masks
    that are never empty by construction (a batch-wide loss mask, a
    processor that guarantees a patch), embeddings of a learned projection
    (since dropped from the rule), plotting and dead code. It is an audit
    rule: a list of the divisions to look at, not a list of bugs.

    ## Why is this bad?
    Floating-point division by 0 does not raise: `x / 0` is inf and `0 / 0`
    is NaN, in every dtype (float16's max is 65504, so in float16 a divisor
    below 1.53e-5 already overflows `1 / d`). A masked mean
    `(loss * mask).sum() / mask.sum()` of an empty mask is 0 / 0 = NaN; the
    NaN loss back-propagates into every weight, and one step later the model
    is NaN. `nanlint confirm` shows it as a `new-nan` or `new-inf` event at
    this line when a batch reaches the edge case.

    ## Example
    ```python
    loss = (token_loss * mask).sum() / mask.sum()
    ```

    ## Use instead
    ```python
    loss = (token_loss * mask).sum() / mask.sum().clamp(min=1)
    ```
    (an empty mask now gives a loss of 0 with a zero gradient; for a
    standard deviation, a norm or a range add a floor: `d.clamp(min=eps)`
    with an eps float16 holds as a normal number, at least 6.1e-5, or
    `F.normalize(x, dim=-1)` for a norm).

    ## Fix safety
    Safe, and offered only for a count of a mask whose dtype the code shows
    (boolean or integer): a count is a whole number, so `clamp(min=1)`
    changes nothing where it is at least 1 and turns 0 / 0 into 0 / 1 = 0.
    No fix is offered for a float mask (a soft mask may sum to less than 1)
    or for a standard deviation, a norm or a range, where the floor to use
    depends on the data's scale.
    """

    code = "NL111"
    name = "unguarded-divisor"
    summary = "a division by a mask count, a std, a norm or a max - min with no guard: 0/0 = NaN for an empty mask or a constant/zero input"
    default_enabled = False
    fix_applicability = SAFE
    triggers = (re.compile(r"""\.(?:sum|std|norm|count_nonzero|vector_norm)\s*\(|\ba?max\b[^\n]*-[^\n]*\ba?min\b|\[\s*["']max["']\s*\]"""),)
    valid = [
        Valid("import torch\nloss = (l * mask).sum() / mask.sum().clamp(min=1)\n"),
        Valid("import torch\nz = (x - x.mean()) / (x.std() + 1e-5)\n"),
        Valid("import torch\nimport torch.nn.functional as F\nu = F.normalize(x, dim=-1)\n"),
        Valid("import torch\np = w / w.sum(-1, keepdim=True)\n"),
        Valid("import numpy as np\nz = a / np.linalg.norm(a)\n"),
        Valid(
            "import torch\n"
            "def masked_mean(x, mask):\n"
            "    n = mask.sum()\n"
            "    if n == 0:\n"
            "        return x.sum() * 0\n"
            "    return (x * mask).sum() / n\n"
        ),
        Valid("import torch\ndef mean(x, lengths):\n    return x.sum() / len(lengths)\n"),
    ]
    invalid = [
        Invalid(
            "import torch\nloss = (l * (t != -100)).sum() / (t != -100).sum()\n",
            fixed="import torch\nloss = (l * (t != -100)).sum() / (t != -100).sum().clamp(min=1)\n",
        ),
        Invalid("import torch\ndef masked_mean(x, mask):\n    return (x * mask).sum() / mask.sum()\n"),
        Invalid("import torch\na = a / a.std()\n"),
        Invalid("import torch\nu = (p - q) / (p - q).norm(dim=-1, keepdim=True)\n"),
        Invalid("import torch\ny = (x - x.min()) / (x.max() - x.min())\n"),
        Invalid(
            "import torch\n"
            "def scale(loss, labels):\n"
            "    num_tokens = (labels >= 0).sum()\n"
            "    loss /= num_tokens\n"
            "    return loss\n",
            fixed=(
                "import torch\n"
                "def scale(loss, labels):\n"
                "    num_tokens = (labels >= 0).sum()\n"
                "    loss /= num_tokens.clamp(min=1)\n"
                "    return loss\n"
            ),
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self._statistic_names: Dict[str, bool] = {}

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Divide):
            self._division(node, node.left, node.right)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if isinstance(node.operator, cst.DivideAssign):
            self._division(node, node.target, node.value)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        short = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else None
        if short not in _DIVISIONS:
            return
        op = torch_op(self.ctx, node)
        if op not in _DIVISIONS:
            return
        if is_method_call(self.ctx, node):
            other = arg(node, 0, "other")
            numerator = subject(self.ctx, node)
        else:
            other = arg(node, 1, "other")
            numerator = subject(self.ctx, node)
        if other is not None and numerator is not None and not any(a.keyword and a.keyword.value == "rounding_mode" for a in node.args):
            self._division(node, numerator, other.value)

    # -- the query -----------------------------------------------------------
    def _division(self, node: cst.CSTNode, numerator: cst.BaseExpression, divisor: cst.BaseExpression) -> None:
        found = self._kind(divisor, 0)
        if found is None:
            return
        kind, mask, names = found
        facts = self.ctx.facts
        if HOST in (facts.dtype(divisor), facts.dtype(numerator)):
            return  # Python or NumPy numbers: 1 / 0 raises, NumPy warns
        if self._tested(node, names) or self._inside_where(node):
            return
        if isinstance(node, (cst.BinaryOperation, cst.Call)) and facts.cleaned_downstream(node):
            return
        shown = self.ctx.code(divisor).strip()
        if len(shown) > 40:
            shown = shown[:37] + "..."
        advice = {
            COUNT: "clamp the count: `.clamp(min=1)`",
            SPREAD: "add a floor float16 holds: `.clamp(min=eps)` with eps >= 6.1e-5",
            NORM: "use `F.normalize(x, dim=...)` or add a floor: `.clamp(min=eps)` with eps >= 6.1e-5",
            RANGE: "add a floor: `.clamp(min=eps)`, or skip constant features",
        }[kind]
        self.report(
            node,
            f"dividing by `{shown}`, {_WHY[kind]}: x / 0 = inf and 0 / 0 = NaN, and so is everything computed from it "
            f"(a loss, then every weight); {advice}",
            self._fix(divisor) if kind == COUNT and mask is not None and facts.dtype(mask) == INTEGER else None,
            confidence=LOW,
        )

    def _kind(self, node: cst.BaseExpression, depth: int) -> Optional[Tuple[str, Optional[cst.BaseExpression], Set[str]]]:
        """(kind, the mask of a count or None, the names a guard would test)."""
        if depth > 4:
            return None
        node = look_through(self.ctx, node, _KEEPS_ZEROS)
        if isinstance(node, cst.Name):
            if not self._assigned_a_statistic(node.value):
                return None  # a text test first: following the name builds the file's scopes
            value = self._single_value(node)
            if value is None or self._changed_in_place(node):
                return None
            found = self._kind(value, depth + 1)
            if found is not None:
                found[2].add(node.value)
            return found
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract):
            if self._extreme(node.left, "max", depth) and self._extreme(node.right, "min", depth):
                names = {n for n in (last_name(node.left), last_name(node.right)) if n}
                return RANGE, None, names
            return None
        if not isinstance(node, cst.Call):
            return None
        op = torch_op(self.ctx, node)
        base = subject(self.ctx, node)
        if base is None:
            return None
        if op in ("sum", "count_nonzero", "nansum"):
            mask = look_through(self.ctx, base, _KEEPS_ZEROS, subscripts=False)
            if not self._mask_like(mask):
                return None
            return COUNT, mask, {n for n in (last_name(mask),) if n}
        if op == "std":
            return SPREAD, None, {n for n in (last_name(base),) if n}
        if op in ("norm", "vector_norm") and self._difference(base, depth):
            return NORM, None, {n for n in (last_name(base),) if n}
        return None

    def _assigned_a_statistic(self, name: str) -> bool:
        """Some line of the file assigns ``name`` something that may be a
        count, a spread, a norm or an extreme."""
        found = self._statistic_names.get(name)
        if found is None:
            found = re.search(rf"\b{re.escape(name)}\s*(?::[^=\n]*)?=[^=\n][^\n]*(?:{_STATISTIC_TEXT})",
                              self.ctx.source) is not None
            self._statistic_names[name] = found
        return found

    def _difference(self, node: cst.BaseExpression, depth: int) -> bool:
        """``a - b``, or a name bound to one (``offset = target - origin``)."""
        node = look_through(self.ctx, node, _KEEPS_ZEROS)
        if isinstance(node, cst.Name) and depth < 4:
            value = self._single_value(node)
            return value is not None and self._difference(value, depth + 1)
        return isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract)

    def _single_value(self, name: cst.Name) -> Optional[cst.BaseExpression]:
        """The value of the one assignment that reaches ``name``."""
        bindings = self.ctx.facts.scopes.reaching(name)
        if len(bindings) != 1 or bindings[0].kind not in ("assign", "walrus"):
            return None
        return bindings[0].value

    def _mask_like(self, mask: cst.BaseExpression) -> bool:
        dtype = self.ctx.facts.dtype(mask)
        if dtype == INTEGER:
            return True
        if dtype == HOST:
            return False
        name = last_name(mask)
        return name is not None and _MASK_NAME.search(name) is not None

    def _extreme(self, node: cst.BaseExpression, which: str, depth: int) -> bool:
        """``x.max()``, ``torch.amax(x)``, ``x.max(0).values``, ``x.max(0)[0]``, a
        name bound to one, ``stats["max"]``, or a name like ``x_max``."""
        if isinstance(node, cst.Attribute) and node.attr.value == "values":
            node = node.value
        if isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
            key = node.slice[0].slice.value
            if isinstance(key, cst.SimpleString) and key.evaluated_value == which:
                return True
        node = look_through(self.ctx, node, _KEEPS_ZEROS)
        if isinstance(node, cst.Call):
            return torch_op(self.ctx, node) in (which, "a" + which)
        if isinstance(node, cst.Name):
            value = self._single_value(node)
            if value is not None and depth < 4 and self._extreme(value, which, depth + 1):
                return True
            pattern = _MAX_NAME if which == "max" else _MIN_NAME
            return pattern.match(node.value) is not None and self.ctx.facts.dtype(node) != HOST
        return False

    # -- guards ------------------------------------------------------------------
    def _changed_in_place(self, name: cst.Name) -> bool:
        """``n.clamp_(min=1)``, ``n[n == 0] = 1``, ``n += eps`` in the file
        (anywhere: a same-named value elsewhere only keeps the rule quiet)."""
        word = re.escape(name.value)
        return re.search(rf"\b{word}\s*(?:\.\w+_\s*\(|\[[^\]\n]*\]\s*=[^=]|[-+*/|]=)", self.ctx.source) is not None

    def _tested(self, node: cst.CSTNode, names: Set[str]) -> bool:
        """A condition of the function (``if``, ``while``, ``assert``, ``a if c
        else b``) reads the divisor or its mask."""
        if not names:
            return False
        scopes = self.ctx.facts.scopes
        scope = scopes.enclosing_function(node) or self.ctx.module
        for sub in subtree(scope):
            test = None
            if isinstance(sub, (cst.If, cst.While, cst.IfExp)):
                test = sub.test
            elif isinstance(sub, cst.Assert):
                test = sub.test
            elif isinstance(sub, cst.Call) and sub.args and torch_op(self.ctx, sub) == "where":
                test = sub.args[0].value  # `torch.where(g_norm > 0, w_norm / g_norm, 1.0)`, before or after
            if test is not None and self._reads(test, names):
                return True
        return False

    def _reads(self, test: cst.BaseExpression, names: Set[str]) -> bool:
        """``test`` reads one of ``names`` other than in a finiteness check
        (``assert not torch.isinf(std).any()`` does not keep it from 0)."""
        stack: List[cst.CSTNode] = [test]
        seen = 0
        while stack and seen < 200:
            sub = stack.pop()
            seen += 1
            if isinstance(sub, cst.Name) and sub.value in names:
                return True
            if isinstance(sub, cst.Call) and torch_op(self.ctx, sub) in _FINITENESS:
                continue
            stack.extend(children(sub))
        return False

    def _inside_where(self, node: cst.CSTNode) -> bool:
        """The division is an operand of ``torch.where`` (NL109 judges its gradient)."""
        for up in self.ctx.facts.scopes.ancestors(node):
            if isinstance(up, cst.Call) and torch_op(self.ctx, up) == "where":
                return True
            if isinstance(up, (cst.BaseSmallStatement, cst.BaseCompoundStatement)):
                return False
        return False

    def _fix(self, divisor: cst.BaseExpression) -> Optional[FixSpec]:
        text = self.ctx.code(divisor).strip()
        if not isinstance(divisor, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or "\n" in text:
            return None
        return FixSpec(
            SAFE,
            "Clamp the count at 1: an empty mask then gives 0 instead of 0 / 0 = NaN",
            replace=[(divisor, f"{text}.clamp(min=1)")],
        )
