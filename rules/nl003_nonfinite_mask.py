from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import libcst as cst

from nanlint.analysis import ACTIVATION, BF16, HALF, HOST, INTEGER, WIDE
from nanlint.analysis import masks
from nanlint.engine import scope_nodes, subtree

from nanlint.dtypes import BFLOAT16, FLOAT32_MAX, fmt
from nanlint.finding import HIGH, LOW, MEDIUM, SAFE, UNSAFE
from nanlint.patterns import arg, is_method_call, number, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid

FLOAT64_MAX = 1.7976931348623157e308

TRIANGLE_OPS = frozenset({"triu", "tril", "triu_", "tril_"})
# `torch.where(torch.isnan(x), inf, x)`: the branch repairs or propagates special values
SPECIAL_VALUE_TESTS = frozenset({"isnan", "isinf", "isposinf", "isneginf", "isfinite", "isreal"})
_FLOAT32_NAMES = frozenset({"torch.float32", "torch.float", "numpy.float32"})
_FLOAT64_NAMES = frozenset({"torch.float64", "torch.double", "numpy.float64"})
#: text of a literal that may be a hazard: an infinity, a `finfo` bound, a number
#: written with a positive exponent or with five digits or more
_NAMED_VALUE_TEXT = re.compile(r"\b[iI]nf(?:inity|ty)?\b|finfo|\d[eE]\+?\d|\d{5}")
_CONTAINER_CALLS = frozenset({"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque"})


@dataclass
class Hazard:
    value: float  # the fill value (±inf, or the out-of-range finite number)
    quoted: str  # how the message quotes it: `-1e9`, `NEG` (= `-1e9`)
    short: str  # the value's own text
    literal: bool  # the value node is the literal itself (a fix may replace it)
    finite: bool
    overflows: Tuple[str, ...]  # target dtypes it overflows (finite values)


class NonfiniteMask(Rule):
    """
    ## What it does
    Flags infinite fill values -- `float('-inf')`, `-float('inf')`,
    `-math.inf`, `-torch.inf`, `-np.inf`, `float('inf')`, directly or through
    a local name, module constant, parameter default or an attribute that
    every assignment in the class sets to it (`self.score_mask_value =
    -float('inf')` in `__init__`) -- used as a mask:
    passed to `masked_fill`/`masked_fill_`, as a `torch.where` branch, in a
    masked index assignment (`x[mask] = -inf`), in `torch.triu`/`torch.tril`
    of a tensor filled with -inf, and multiplied by a mask (`mask * -inf`).
    Also flags finite fill literals outside the range of a target dtype
    (`-1e9`, `1e10`: float16's max is 65504) and a hard-coded
    `torch.finfo(torch.float32).min` in those places.

    Each finding says how sure it is (the shared analysis decides dtypes, where
    values go and what a mask is, see `nanlint.analysis.masks`):
    - high: a finite fill beyond the target dtype's range given to
      `masked_fill` on a tensor that may be float16 (it raises, whatever the
      mask); a mask product with such a fill or with -inf (`mask * -1e9`: the
      fill turns -inf and 0 * inf is NaN wherever the mask is 0); `triu`/`tril`
      of a -inf tensor that keeps the diagonal filled (its first or last row is
      all -inf);
    - medium: a -inf fill with a mask from data (key padding, a selection),
      or a finite fill beyond float16's range in `where` or an index assignment
      (`x[m] = -1e20` silently turns -inf there): NaN needs a row with every
      entry masked, such as an all-padding sample; a `masked_fill` with
      `torch.finfo(torch.float32).min` on a tensor this file does not show
      being made as an activation and that no softmax follows here (the
      author names float32, and nothing shows the tensor may be float16);
    - low: the mask cannot blank a row by itself -- it is causal and keeps the
      diagonal (`triu(full(-inf), diagonal=start_pos + 1)`: a position plus a
      positive literal is at least 1), a top-k/top-p/min-p filter keeps each row's top entry (or the
      mask has an entry reset to False), or the index reaches only some columns
      (`x[:, eos] = -inf`, `x[:, :k]`, `x[1:][m]`) -- and the filled value
      leaves the function, where another mask may be added; a -inf fill into a
      tensor that is float32 here (not a float16 hazard); `+inf` (more often a
      sentinel for a min or a sort); an integer literal into a tensor that may
      hold integers (`ids[m] = 128000`).

    Not flagged: `torch.finfo(x.dtype).min`, in-range fills such as `-1e4`,
    `torch.full(..., -inf)` used as a running-max initialiser, comparisons
    with inf, `torch.where(torch.isnan(x), ...)`-style repairs of special
    values, index assignments into dicts and lists, fills into integer or bool
    tensors, finite fills into tensors known to be float32
    (`x.float().masked_fill(m, -1e9)`), fills consumed only by a selection
    (`max`, `topk`, `sort`...) or by `exp`, where -inf is exactly what is meant
    (it is never selected; exp(-inf) = 0), and masks that cannot blank a row
    (as above) whose result goes straight into a softmax or a selection,
    and a tensor the same function fills with both -inf and +inf (a threshold
    turned into a sign map for a sigmoid: not masked scores).
    Where nothing else tells a mask from a list of positions, a name
    containing `mask` counts as a mask.

    ## Why is this bad?
    After a `-inf` fill, softmax over a row whose every entry is masked
    (a padded query, an empty selection) computes exp(-inf - (-inf)) = 0/0:
    the row is NaN, and so are the gradients flowing through it
    (`nn.MultiheadAttention` with `need_weights=True` returns NaN for such
    rows). `mask * -inf` is NaN wherever the mask is 0, since 0 * -inf = NaN.
    A finite fill of `torch.finfo(dtype).min` gives a uniform row instead.

    Large finite constants are no better in half precision: float16's max is
    65504, so `-1e9` becomes -inf in `torch.where(m, x, -1e9)`, `x[m] = -1e9`
    and `mask * -1e9` (silently), while `half.masked_fill(m, -1e9)` raises
    "value cannot be converted to type c10::Half without overflow".
    `torch.finfo(torch.float32).min` (-3.4e38) overflows float16 and
    bfloat16 (max 3.39e38) the same way.

    ## Example
    ```python
    scores = scores.masked_fill(~mask, float("-inf"))
    scores = torch.where(mask, scores, -1e9)
    ```

    ## Use instead
    ```python
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
    ```

    ## Fix safety
    The fix replaces the fill literal with `torch.finfo(<filled>.dtype).min`
    (`.max` for a positive fill), where `<filled>` is the receiver of
    `masked_fill`, the other branch of `torch.where`, or the indexed tensor.
    Masked entries still get probability 0 after softmax; only fully masked
    rows change, from NaN to uniform. It is safe when `<filled>` is a plain
    name or attribute, unsafe when it is a larger expression that the fix
    evaluates a second time (offered only when that expression has no call
    that could have side effects). There is no fix when the value comes
    through a name, when there is no tensor to take the dtype from (both
    `where` branches are literals, `mask * -inf`, a `triu` of `torch.full`),
    or for an integer literal (the tensor may be an integer tensor).
    """

    code = "NL003"
    name = "nonfinite-mask"
    summary = "-inf mask fills give NaN rows after softmax; fills beyond 65504 overflow float16"
    fix_applicability = SAFE
    # every finding is in a masked_fill, a where, a subscript assignment, a product or an inf
    # every hazard has an infinity (`-inf`, `math.inf`, `finfo`, `np.Inf`, an `INF`
    # name) or a literal beyond 65504 (`1e9`, `1E+10`, five digits, `1_000_000`,
    # `2 ** 30`, hex); `info`, `infer` and `**kwargs` do not count
    triggers = (
        # the digit-led alternatives share one `\d`: one scan of the text instead of four
        re.compile(r"\binf\b|Inf\b|INF\b|finfo|Infinity|infinity|\d(?:[eE]\+?\d|\d{4}|_\d{3}|\s*\*\*\s*\(?\d)|0[xX]"),
    )
    valid = [
        Valid("import torch\ns = s.masked_fill(~m, torch.finfo(s.dtype).min)\n"),
        Valid("import torch\ns = s.masked_fill(~m, -1e4)\n"),
        Valid("import torch\nbest = torch.full((n,), float('-inf'))\n"),
        Valid("import torch\nbad = torch.isinf(x) | (x == float('-inf'))\n"),
        Valid("best_score = float('-inf')\nfor s in scores:\n    best_score = max(best_score, s)\n"),
        Valid("import torch\ns = s.float().masked_fill(~m, -1e9)\n"),
        # a masked_fill mask is bool: `mask * 1.0` is float32, where -1e9 fits
        Valid("import torch\ndef bias(mask):\n    return (mask * 1.0).masked_fill(mask, -1e9).to(torch.bfloat16)\n"),
        Valid("import torch\ndef bias(keep, s):\n    s = torch.where(keep, s, 0.0)\n"
              "    return (keep * 1.0).masked_fill(~keep, -1e9)\n"),
        Valid("timings = {}\ntimings['fwd'] = float('inf')\n"),
        Valid("import torch\nidx = s.masked_fill(~m, float('-inf')).argmax(-1)\n"),
        Valid("import torch\nd = (g[:, None] - g[None]).masked_fill(upper, float('-inf')).exp()\n"),
        Valid("import torch\ny = torch.where(torch.isnan(x), float('inf'), x)\n"),
        # causal: the diagonal stays, and the softmax follows right here
        Valid(
            "import torch\ndef attend(att, T):\n"
            "    att = att.masked_fill(torch.ones(T, T).tril() == 0, float('-inf'))\n"
            "    return att.softmax(-1)\n"
        ),
        # top-k filter: each row keeps its top entry
        Valid(
            "import torch\ndef sample(logits, k):\n    v, _ = torch.topk(logits, k)\n"
            "    logits[logits < v[:, [-1]]] = -float('Inf')\n    return torch.softmax(logits, dim=-1)\n"
        ),
        # beam search: one column of log-probabilities, then a selection
        Valid("import math\nimport torch\ndef step(lprobs, eos, k):\n    lprobs[:, eos] = -math.inf\n"
              "    return torch.topk(lprobs, k)\n"),
        # look-alikes of an attribute fill: in range, or set to another value elsewhere
        Valid(
            "import torch\nfrom torch import nn\nclass Attention(nn.Module):\n"
            "    def __init__(self, half):\n        super().__init__()\n"
            "        self.low = -1e4\n        self.fill = -float('inf')\n"
            "    def use_finite(self):\n        self.fill = -1e4\n"
            "    def forward(self, e, mask):\n"
            "        return torch.softmax(e.masked_fill(mask, self.low) + e.masked_fill(mask, self.fill), 1)\n"
        ),
        # token ids are never float16
        Valid("import torch\nids = torch.zeros(n, dtype=torch.long)\nids[empty] = 128000\n"),
    ]
    invalid = [
        Invalid(
            "import torch\ns = s.masked_fill(~m, float('-inf'))\n",
            fixed="import torch\ns = s.masked_fill(~m, torch.finfo(s.dtype).min)\n",
        ),
        Invalid(
            "import torch as T\nscores = T.where(mask, self.scores, -1e9)\n",
            fixed="import torch as T\nscores = T.where(mask, self.scores, T.finfo(self.scores.dtype).min)\n",
        ),
        Invalid(
            "import math\nlogits[banned] = -math.inf\n",
            fixed="import math\nimport torch\nlogits[banned] = torch.finfo(logits.dtype).min\n",
        ),
        Invalid(
            "import torch\nmask = torch.triu(torch.full((n, n), float('-inf')), diagonal=1)\n",
        ),
        Invalid("import torch\nbias = (1.0 - mask) * -float('inf')\n"),
        # look-alike: the scores, not the mask, are filled; their dtype is unknown
        Invalid("import torch\ndef bias(scores, mask):\n    return (scores * 1.0).masked_fill(mask, -1e9)\n",
                fixed="import torch\ndef bias(scores, mask):\n"
                      "    return (scores * 1.0).masked_fill(mask, torch.finfo((scores * 1.0).dtype).min)\n"),
        # a fill held in an attribute that __init__ sets
        Invalid(
            "import torch\nfrom torch import nn\nclass Attention(nn.Module):\n"
            "    def __init__(self):\n        super().__init__()\n"
            "        self.score_mask_value = -float('inf')\n"
            "    def forward(self, energies, mask):\n"
            "        energies = energies.masked_fill(mask, self.score_mask_value)\n"
            "        return torch.softmax(energies, dim=1)\n"
        ),
        # diagonal=0 keeps the diagonal filled: row 0 is all -inf
        Invalid("import torch\nmask = torch.triu(torch.full((n, n), float('-inf')))\n"),
        Invalid(
            "import torch\nw = w.masked_fill_(pad, torch.finfo(torch.float32).min)\n",
            fixed="import torch\nw = w.masked_fill_(pad, torch.finfo(w.dtype).min)\n",
        ),
        Invalid(
            "import torch\ndef top_k(logits, k, filter_value=-float('inf')):\n"
            "    remove = logits < torch.topk(logits, k)[0][..., -1, None]\n"
            "    logits[remove] = filter_value\n"
            "    return logits\n",
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        #: name -> whether the file binds it to a value that may be a hazard (:meth:`_named_value`)
        self._named: Dict[str, bool] = {}

    # -- detection ---------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        op = torch_op(self.ctx, node)
        if op is None:
            return
        method = is_method_call(self.ctx, node)
        if op in masks.FILL_OPS:
            value = arg(node, 1 if method else 2, "value")
            mask = arg(node, 0 if method else 1, "mask")
            filled = subject(self.ctx, node)
            if value is not None:
                self._check(value.value, filled, "masked_fill", node, mask.value if mask is not None else None)
        elif op == "where":
            self._check_where(node, method)
        elif op in TRIANGLE_OPS:
            inner = subject(self.ctx, node)
            if inner is not None:
                self._check_triangle(node, inner, op)

    def _check_where(self, node: cst.Call, method: bool) -> None:
        if method:  # x.where(cond, other)
            cond, other = arg(node, 0, "condition"), arg(node, 1, "other")
            # x.where(cond, other): `other` where cond is False
            branches = [(other, node.func.value, False)] if other is not None else []  # type: ignore[union-attr]
        else:
            cond, a, b = arg(node, 0, "condition"), arg(node, 1, "input"), arg(node, 2, "other")
            if a is None or b is None:
                return
            branches = [(a, b.value, True), (b, a.value, False)]
        if cond is not None and self._special_value_test(cond.value):
            return
        for branch, filled, fill_when in branches:
            assert branch is not None
            self._check(branch.value, filled, "where", node, cond.value if cond is not None else None, fill_when)

    def _special_value_test(self, cond: cst.BaseExpression) -> bool:
        for n in subtree(cond):
            if isinstance(n, cst.Call) and torch_op(self.ctx, n) in SPECIAL_VALUE_TESTS:
                return True
            if isinstance(n, cst.Comparison):
                for operand in (n.left, *(c.comparator for c in n.comparisons)):
                    v = self._value(operand)
                    if v is not None and math.isinf(v):
                        return True
        return False

    def _check_triangle(self, call: cst.Call, inner: cst.BaseExpression, op: str) -> None:
        if isinstance(inner, cst.Name):
            bound = masks.definition(self.ctx.facts, inner)
            if bound is None:
                return
            inner = bound
        literal = self._infinite_filler(inner)
        if literal is None:
            return
        hazard = self._hazard(literal)
        if hazard is None or hazard.finite:
            return
        name = op.rstrip("_")
        diagonal = masks.triangle_fill_diagonal(self.ctx.facts, call)
        if diagonal:
            row = "first" if name == "triu" else "last"
            message = (
                f"`torch.{name}` of a tensor filled with {hazard.quoted} keeps the diagonal filled: the {row} "
                f"row is entirely {hazard.short} and NaN after softmax (-inf - -inf = NaN); fill with "
                f"`torch.finfo(dtype).min` instead"
            )
            confidence = HIGH
        else:
            message = (
                f"`torch.{name}` of a tensor filled with {hazard.quoted}: every row this mask fully "
                f"masks, combined with a padding mask, is NaN after softmax (-inf - -inf = NaN); "
                f"fill with `torch.finfo(dtype).min` instead"
            )
            # the diagonal stays finite: NaN needs another mask on top (low); an offset that is
            # not a literal may or may not keep it (medium)
            confidence = LOW if diagonal is False else MEDIUM
        self.report(literal, message, confidence=confidence)

    def _infinite_filler(self, node: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        """The fill value of `torch.full(size, v)`, `x.new_full(size, v)`, `full_like(x, v)`,
        `x.fill_(v)`, `torch.ones(...) * v`."""
        if isinstance(node, cst.Call):
            op = torch_op(self.ctx, node)
            method = is_method_call(self.ctx, node)
            found = None
            if op == "full" and not method:
                found = arg(node, 1, "fill_value")
            elif op in ("new_full",) and method:
                found = arg(node, 1, "fill_value")
            elif op == "full_like" and not method:
                found = arg(node, 1, "fill_value")
            elif op == "fill_" and method:
                found = arg(node, 0, "value")
            return found.value if found is not None else None
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
            for lit, other in ((node.left, node.right), (node.right, node.left)):
                v = self._value(lit)
                if v is not None and math.isinf(v) and self._nonzero(other):
                    return lit
        return None

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            t = target.target
            if isinstance(t, cst.Subscript) and self._hazard(node.value) is not None \
                    and self._tensor_index(t) and not self._binarised(t, node):
                # `x[m] = v`: the mask is the index; `x[:, cols] = v`: the subscript as a whole
                only = t.slice[0].slice if len(t.slice) == 1 else None
                mask = only.value if isinstance(only, cst.Index) else t
                self._check(node.value, t.value, "index", None, mask, target=t, statement=node)

    def _binarised(self, target: cst.Subscript, statement: cst.Assign) -> bool:
        """``x[x < t] = -inf`` next to ``x[x >= t] = inf`` in the same function:
        the tensor becomes a map of signed infinities (a threshold turned into
        +-inf for a sigmoid or a sign), not scores with a masked column; a
        softmax of it would be NaN wherever +inf appears, whatever the mask."""
        value = self._value(statement.value)
        if value is None or not math.isinf(value) or not isinstance(target.value, cst.Name):
            return False
        scopes = self.ctx.facts.scopes
        func = scopes.enclosing_function(statement)
        if func is None:
            return False
        name = target.value.value
        for other in scope_nodes(func.body):
            if type(other) is not cst.Assign or other is statement or len(other.targets) != 1:
                continue
            t = other.targets[0].target
            if isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name) and t.value.value == name:
                v = self._value(other.value)
                if v is not None and math.isinf(v) and (v > 0) != (value > 0):
                    return True
        return False

    def _tensor_index(self, node: cst.Subscript) -> bool:
        """Whether `x[...] = v` looks like a masked tensor assignment rather than an
        item of a dict or list."""
        container = node.value
        facts = self.ctx.facts
        if isinstance(container, cst.Name):
            bound = masks.definition(facts, container)
            if isinstance(bound, (cst.Dict, cst.List, cst.Set, cst.DictComp, cst.ListComp, cst.SetComp)):
                return False
            if isinstance(bound, cst.Call) and isinstance(bound.func, (cst.Name, cst.Attribute)):
                callee = bound.func.value if isinstance(bound.func, cst.Name) else bound.func.attr.value
                if callee in _CONTAINER_CALLS:
                    return False
                qualified = self.ctx.resolve(bound.func)
                if qualified is not None and qualified.startswith("numpy."):
                    return False  # a NumPy array: float64 unless said otherwise, never softmaxed here
        # `x[:] = -inf`, `x[...] = -inf`: the whole tensor, an initialiser like torch.full
        if all(
            (isinstance(e.slice, cst.Slice) and e.slice.lower is None and e.slice.upper is None and e.slice.step is None)
            or (isinstance(e.slice, cst.Index) and isinstance(e.slice.value, cst.Ellipsis))
            for e in node.slice
        ):
            return False
        # an item, not a mask: `table["key"]`, `x[4]`, `table[key]` with a loop variable
        # (but `scores[i, banned_tokens]` indexes a tensor)
        if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
            value = node.slice[0].slice.value
            if isinstance(value, (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString, cst.Integer)):
                return False
            if isinstance(value, cst.Name) and any(b.kind == "for" for b in facts.scopes.reaching(value)[:1]):
                return False
        return True

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Multiply):
            return
        for lit, other in ((node.left, node.right), (node.right, node.left)):
            hazard = self._hazard(lit)
            if hazard is None:
                continue
            if self._nonzero(other):
                continue
            mask = masks.is_mask_factor(self.ctx.facts, other, positive=hazard.value > 0)
            if hazard.finite:
                if not mask or not self.ctx.facts.can_be_half(other):
                    continue
                self.report(
                    lit,
                    f"{hazard.quoted} times a mask: {self._range_text(hazard)}, so the product is "
                    f"{'-' if hazard.value < 0 else ''}inf wherever the mask is set in a half-precision "
                    f"tensor, and a fully masked row is NaN after softmax; use `torch.finfo(dtype).min` "
                    f"(or a `masked_fill`) instead",
                    needs_half=True,
                )
            else:
                self.report(
                    lit,
                    f"{hazard.quoted} times a mask: 0 * inf is NaN, so every entry where the mask "
                    f"is 0 becomes NaN; use `torch.finfo(dtype).min` (or a `masked_fill`) instead",
                    # a 0/1 mask has zeros for ordinary inputs; another factor only may
                    confidence=HIGH if mask else LOW,
                )

    # -- values ----------------------------------------------------------------
    def _value(self, node: cst.BaseExpression) -> Optional[float]:
        """The number a literal stands for: `float('-inf')`, `-math.inf`, `1e9`,
        `torch.finfo(torch.float32).min`."""
        v = number(node)
        if v is not None:
            return v
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
            inner = self._value(node.expression)
            if inner is None:
                return None
            return -inner if isinstance(node.operator, cst.Minus) else inner
        if isinstance(node, (cst.Name, cst.Attribute)):
            qualified = self.ctx.resolve(node)
            if qualified in ("math.inf", "torch.inf", "numpy.inf", "numpy.Inf", "numpy.infty"):
                return math.inf
            dtype = self._finfo_dtype(node)
            big = FLOAT32_MAX if dtype in _FLOAT32_NAMES else FLOAT64_MAX if dtype in _FLOAT64_NAMES else None
            if big is not None:
                return -big if node.attr.value == "min" else big  # type: ignore[union-attr]
        return None

    def _finfo_dtype(self, node: cst.BaseExpression) -> Optional[str]:
        """``torch.float32`` for ``torch.finfo(torch.float32).min`` (or ``.max``,
        ``numpy.finfo``, a dtype written as a string), else None."""
        if not (isinstance(node, cst.Attribute) and node.attr.value in ("min", "max") and isinstance(node.value, cst.Call)):
            return None
        call = node.value
        if self.ctx.resolve(call.func) not in ("torch.finfo", "numpy.finfo") or len(call.args) != 1:
            return None
        if isinstance(call.args[0].value, cst.SimpleString):
            return "torch." + str(call.args[0].value.evaluated_value)
        return self.ctx.resolve(call.args[0].value)

    def _hazard(self, node: cst.BaseExpression) -> Optional[Hazard]:
        literal = True
        bound = None
        v = self._value(node)
        if v is None and isinstance(node, cst.Name) and self._named_value(node.value):
            bound = masks.definition(self.ctx.facts, node)
            if bound is None:
                return None
            v = self._value(bound)
            literal = False
        elif v is None and isinstance(node, cst.Attribute) and self._attribute_value(node):
            # `self.score_mask_value = -float("inf")` in __init__, the same value in every assignment
            values = [value for _, value in self.ctx.facts.scopes.self_attribute(node)]
            numbers = {self._value(value) if value is not None else None for value in values}
            if not values or len(numbers) != 1 or None in numbers:
                return None
            bound, v, literal = values[0], numbers.pop(), False
        if v is None or math.isnan(v):
            return None
        overflows: Tuple[str, ...] = ()
        if not math.isinf(v):
            overflows = tuple(d.name for d in self.ctx.dtypes if abs(v) > d.max)
            if not overflows:
                return None
        short = self.ctx.code(node).strip()
        quoted = f"`{short}`" if bound is None else f"`{short}` (= `{self.ctx.code(bound).strip()}`)"
        return Hazard(v, quoted, short, literal, not math.isinf(v), overflows)

    def _attribute_value(self, node: cst.Attribute) -> bool:
        """``self.<attr>``, which this file assigns a value holding a literal that
        may be a hazard (as :meth:`_named_value`, without building the scopes first)."""
        if not (isinstance(node.value, cst.Name) and node.value.value == "self"):
            return False
        key = f"self.{node.attr.value}"
        if key not in self._named:  # shares the cache of plain names: no name holds a dot
            source = self.ctx.source
            self._named[key] = False
            for match in re.finditer(rf"self\.{re.escape(node.attr.value)}\s*(?::[^=\n]*)?=(?!=)", source):
                end = source.find("\n", match.end())
                if _NAMED_VALUE_TEXT.search(source[match.end():end if end >= 0 else len(source)]):
                    self._named[key] = True
                    break
        return self._named[key]

    def _named_value(self, name: str) -> bool:
        """Whether this file's text binds ``name`` (``name = v``, ``name: T = v``,
        a default ``name=v``, ``name := v``, an unpacking ``a, name = v``) to a
        value whose text holds a literal that may be a hazard (an infinity, a
        `finfo` bound, a number with an exponent or five digits). Only then is
        its definition looked up: that builds the file's scope analysis."""
        if name not in self._named:
            source = self.ctx.source
            found = False
            # the pattern starts with the name's literal text, which the regex engine finds fast
            for match in re.finditer(rf"{re.escape(name)}\s*(?::[^=\n]*)?:?=(?!=)", source):
                start = match.start()
                if start and (source[start - 1].isalnum() or source[start - 1] in "_."):
                    continue  # a longer name, or an attribute
                end = source.find("\n", match.end())
                rhs = source[match.end():end if end >= 0 else len(source)]
                if rhs.count("(") + rhs.count("[") + rhs.count("{") > rhs.count(")") + rhs.count("]") + rhs.count("}"):
                    rhs = source[match.end():match.end() + 2000]  # the value goes on over lines
                if _NAMED_VALUE_TEXT.search(rhs):
                    found = True
                    break
            self._named[name] = found
        return self._named[name]

    def _range_text(self, hazard: Hazard) -> str:
        names = [d for d in self.ctx.dtypes if d.name in hazard.overflows]
        return (
            f"{fmt(hazard.value)} is outside the {' and '.join(d.name for d in names)} range "
            f"(max {' / '.join(fmt(d.max) for d in names)})"
        )

    def _nonzero(self, node: cst.BaseExpression) -> bool:
        """A factor that is never 0: a nonzero number or a tensor of ones."""
        v = self._value(node)
        if v is not None:
            return v != 0
        if isinstance(node, cst.Call):
            qualified = self.ctx.resolve(node.func)
            if qualified is not None and qualified.split(".")[-1] in ("ones", "ones_like"):
                return True  # torch.ones, np.ones
            return torch_op(self.ctx, node) in ("ones", "ones_like", "new_ones")
        return False

    # -- reporting -------------------------------------------------------------------
    def _check(
        self,
        value: cst.BaseExpression,
        filled: Optional[cst.BaseExpression],
        where: str,
        call: Optional[cst.Call],
        mask: Optional[cst.BaseExpression],
        fill_when: bool = True,
        target: Optional[cst.Subscript] = None,
        statement: Optional[cst.CSTNode] = None,
    ) -> None:
        """value: the fill; filled: the tensor it goes into; where: masked_fill, where or
        index; call: the filling call; mask: the mask, where condition or index, filled
        where it is ``fill_when``; target/statement: the subscript and statement of an
        index assignment."""
        hazard = self._hazard(value)
        if hazard is None:
            return
        if hazard.value > 0 and not hazard.finite and where != "masked_fill" and not _mentions_mask(target or mask):
            # +inf outside masked_fill is a value, not a mask: an infinite KL divergence or
            # variance (`result[p.alpha <= 1] = inf`), a distance for a min
            return
        facts = self.ctx.facts
        literal_tensor = filled is not None and (
            self._value(filled) is not None
            or (isinstance(filled, cst.Name) and self._value(masks.definition(facts, filled) or filled) is not None)
        )
        if literal_tensor:
            # `torch.where(m, 0.0, -inf)`: no tensor to take the dtype from; the result has
            # the default dtype (float32), where a finite -1e10 is representable
            if hazard.finite:
                return
            filled = None
        dtype = facts.dtype(filled) if filled is not None else WIDE
        if dtype in (INTEGER, HOST):
            return  # token ids, counts, bool masks, Python lists: never a float16 tensor
        if self._selected_only(filled, call, statement):
            return
        if call is not None and not (hazard.finite and where == "masked_fill") and facts.only_ordered(call):
            return  # the -inf only sorts last or loses a comparison (a worst score)
        if statement is not None and isinstance(filled, cst.Name) and self._later_reads_ordered(filled, statement):
            return  # `lprobs[stopped] = -inf`, then only ranked (beam search)
        if not hazard.finite and call is not None and mask is not None and self._remasked_after_softmax(call, mask):
            return  # a fully masked row's NaN is zeroed again by the same mask (ESPnet-style attention)
        confidence, why = self._confidence(hazard, value, filled, dtype, where, mask, fill_when, target,
                                           call, statement)
        if confidence is None:
            return
        target = "dtype"
        if filled is not None:
            code = self.ctx.code(filled).strip()
            if len(code) <= 40 and "\n" not in code and _side_effect_free(self.ctx, filled):
                target = f"{code}.dtype"
            else:
                target = "<tensor>.dtype"
        bound_name = "min" if hazard.value < 0 else "max"
        instead = f"`torch.finfo({target}).{bound_name}`"
        if hazard.finite:
            if where == "masked_fill":
                dtype_names = {"float16": "Half", "bfloat16": "BFloat16"}
                what = dtype_names.get(hazard.overflows[0], hazard.overflows[0])
                consequence = (
                    f"`masked_fill` on a {hazard.overflows[0]} tensor raises \"value cannot be "
                    f"converted to type c10::{what} without overflow\""
                )
            else:
                consequence = "it silently becomes -inf" if hazard.value < 0 else "it silently becomes inf"
                consequence += " in a half-precision tensor, and a fully masked row is NaN after softmax"
            message = f"{hazard.quoted} as a mask fill: {self._range_text(hazard)}: {consequence}; use {instead}"
        elif hazard.value < 0:
            message = (
                f"{hazard.quoted} as a mask fill: a row where every entry is masked is NaN after softmax "
                f"(-inf - -inf = NaN); use {instead}, which gives a uniform row instead"
            )
        else:
            message = (
                f"{hazard.quoted} as a fill: inf - inf and 0 * inf are NaN in whatever consumes it; use {instead}"
            )
        self.report(value, message + why, self._fix(value, filled, hazard), confidence=confidence,
                    needs_half=hazard.finite)

    def _remasked_after_softmax(self, call: cst.Call, mask: cst.BaseExpression) -> bool:
        """Every use of the filled scores is a softmax whose result is filled
        with 0 by the same mask (``softmax(scores).masked_fill(mask, 0.0)``):
        a fully masked row's NaN is replaced by zeros, and masked_fill's
        backward passes no gradient at the masked entries, so the NaN of
        softmax's backward stops there too."""
        facts = self.ctx.facts
        parent = facts.scopes.parent
        up = parent.get(call)
        if isinstance(up, cst.Assign) and len(up.targets) == 1 and isinstance(up.targets[0].target, cst.Name):
            reads: List[cst.CSTNode] = [r for r in facts.scopes.reads_of_statement(up, up.targets[0].target.value)
                                        if not facts.scopes.exclusive(up, r)]  # not the other branch of an if
        else:
            reads = [call]
        spelled = self.ctx.code(mask).strip()
        if not reads or len(reads) > 4:
            return False
        for read in reads:
            node = _through_casts(parent, read)
            up = parent.get(node)
            if isinstance(up, cst.Attribute) and up.value is node and up.attr.value == "softmax" \
                    and isinstance(parent.get(up), cst.Call):
                softmax = parent.get(up)
            elif isinstance(up, cst.Arg) and isinstance(parent.get(up), cst.Call) \
                    and torch_op(self.ctx, parent.get(up)) == "softmax" and parent.get(up).args[0] is up:
                softmax = parent.get(up)
            else:
                return False
            out = _through_casts(parent, softmax)
            fill = parent.get(out)
            zeroing = parent.get(fill)
            if not (isinstance(fill, cst.Attribute) and fill.value is out and fill.attr.value in ("masked_fill", "masked_fill_")
                    and isinstance(zeroing, cst.Call) and len(zeroing.args) == 2
                    and self.ctx.code(zeroing.args[0].value).strip() == spelled and number(zeroing.args[1].value) == 0):
                return False
        return True

    def _later_reads_ordered(self, filled: cst.Name, statement: cst.CSTNode) -> bool:
        facts = self.ctx.facts
        scopes = facts.scopes
        bindings = scopes.reaching(filled)
        if not bindings or bindings[0].kind != "assign":
            return False  # a parameter filled in place is the caller's tensor
        after = scopes.order.get(statement, 0)
        reads = [r for r in scopes.reads_of(bindings[0]) if scopes.order.get(r, 0) > after and r is not filled]
        return bool(reads) and all(facts.only_ordered(r) for r in reads)

    def _selected_only(self, filled: Optional[cst.BaseExpression], call: Optional[cst.Call],
                       statement: Optional[cst.CSTNode]) -> bool:
        """The filled value only meets selections (`max`, `topk`, `sort`...) or `exp`."""
        facts = self.ctx.facts
        if call is not None and masks.only_selected(facts, call):
            return True
        in_place = statement is not None or (
            call is not None and torch_op(self.ctx, call) == "masked_fill_"
            and isinstance(facts.scopes.parent.get(call), cst.Expr)
        )
        if in_place and isinstance(filled, cst.Name):
            stmt = statement if statement is not None else facts.scopes.statement_of(call)
            return stmt is not None and masks.later_reads_only_selected(facts, filled, stmt)
        return False

    def _confidence(self, hazard: Hazard, value: cst.BaseExpression, filled: Optional[cst.BaseExpression],
                    dtype: str, where: str, mask: Optional[cst.BaseExpression], fill_when: bool,
                    target: Optional[cst.Subscript], call: Optional[cst.Call],
                    statement: Optional[cst.CSTNode]) -> Tuple[Optional[str], str]:
        """How sure the finding is, and why when not sure (appended to the message)."""
        facts = self.ctx.facts
        in_float32 = dtype == WIDE or (filled is not None and facts.in_float32_region(filled))
        if hazard.finite:
            if in_float32 and abs(hazard.value) <= FLOAT32_MAX or dtype == BF16 and abs(hazard.value) <= BFLOAT16.max:
                return None, ""  # representable where it is used
            if dtype != HALF and self._integer_literal(value):
                return LOW, " (an integer fill: the tensor may hold integers, such as token ids)"
            if where == "masked_fill":
                if (dtype != HALF and filled is not None and call is not None and self._names_float32_bound(value)
                        and facts.origin(filled) != ACTIVATION
                        and not {"softmax", "log_softmax", "softmax_"} & set(facts.consumers(call))):
                    # the code names float32's own bound for a tensor this file does not show
                    # being made, and no softmax follows: not a model's attention scores here
                    return MEDIUM, (" (the fill names float32's bound, and nothing here shows the filled "
                                    "tensor is an activation that may be float16)")
                return HIGH, ""  # raises on a float16 tensor, whatever the mask
        structure = self._never_full_row(mask, fill_when, target)
        if structure:
            if masks.consumed_here(facts, call, filled, statement):
                return None, ""  # normalised right here: no other mask can blank the kept entry
            return LOW, f" ({structure}: only a row that another mask blanks as well is NaN)"
        # a finite fill outside masked_fill (`x[m] = -1e20`, `where(m, x, -1e20)`) turns
        # -inf silently in float16: from here on it is as sure as an -inf fill
        if in_float32:
            return LOW, " (the filled tensor is float32 here: not a float16 hazard)"
        if hazard.value > 0:
            return LOW, " (+inf is often a sentinel for a min or a sort)"
        # a mask from data: NaN needs a row with every entry masked (an all-padding sample)
        return MEDIUM, ""

    def _names_float32_bound(self, value: cst.BaseExpression) -> bool:
        """``torch.finfo(torch.float32).min`` (or ``.max``, ``float64``): the
        author's own statement of the dtype the tensor holds."""
        if isinstance(value, cst.UnaryOperation):
            value = value.expression
        return (self._finfo_dtype(value) or "") in _FLOAT32_NAMES | _FLOAT64_NAMES

    def _integer_literal(self, value: cst.BaseExpression) -> bool:
        """`-100000`, `TOKEN_ID` (= `151654`): a number written without a float."""
        if isinstance(value, cst.Name):
            value = masks.definition(self.ctx.facts, value) or value
        return number(value) is not None and not any(isinstance(n, cst.Float) for n in subtree(value))

    def _never_full_row(self, mask: Optional[cst.BaseExpression], fill_when: bool,
                        target: Optional[cst.Subscript]) -> str:
        """Why the fill can never cover a whole row, or ""."""
        facts = self.ctx.facts
        if target is not None and masks.partial_index(facts, target):
            return "the index reaches only some columns of each row"
        if mask is None or mask is target:
            return ""
        if masks.keeps_diagonal(facts, mask, fill_when):
            return "the mask is causal and keeps the diagonal"
        if masks.keeps_top_entry(facts, mask, fill_when):
            return "the mask keeps an entry of each row (a top-k/top-p threshold or an entry reset to False)"
        return ""

    def _fix(self, value: cst.BaseExpression, filled: Optional[cst.BaseExpression], hazard: Hazard) -> Optional[FixSpec]:
        if filled is None or not hazard.literal:
            return None
        if _is_chain(filled):
            applicability = SAFE
        elif _side_effect_free(self.ctx, filled):
            applicability = UNSAFE
        else:
            return None
        if any(isinstance(n, cst.Integer) for n in subtree(value)) and not any(
            isinstance(n, cst.Float) for n in subtree(value)
        ) and hazard.finite:
            applicability = UNSAFE  # `-100000`: maybe an integer tensor, which finfo rejects
        text = self.ctx.code(filled).strip()
        if filled.lpar:
            pass  # the code already carries its parentheses
        elif not isinstance(filled, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)):
            text = f"({text})"
        bound = "min" if hazard.value < 0 else "max"
        new = f"{self.ctx.torch_name()}.finfo({text}.dtype).{bound}"
        return FixSpec(
            applicability,
            f"Fill with the {'lowest' if bound == 'min' else 'highest'} finite value of the filled tensor's dtype",
            replace=[(value, new)],
            imports=("torch",),
        )


#: methods that change a tensor's dtype or layout, not its values' pattern
_CASTS = frozenset({"float", "half", "bfloat16", "double", "to", "type_as", "type", "contiguous"})


def _through_casts(parent, node: cst.CSTNode) -> cst.CSTNode:
    """``node``, or the outermost ``node.float().type_as(v)...`` chain of casts around it."""
    while True:
        up = parent.get(node)
        call = parent.get(up)
        if not (isinstance(up, cst.Attribute) and up.value is node and up.attr.value in _CASTS
                and isinstance(call, cst.Call) and call.func is up):
            return node
        node = call


def _is_chain(node: cst.BaseExpression) -> bool:
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name)


def _side_effect_free(ctx, node: cst.BaseExpression) -> bool:
    """Names, attributes, subscripts, operators and pure tensor methods only."""
    for n in subtree(node):
        if isinstance(n, (cst.Await, cst.Yield, cst.NamedExpr, cst.Lambda)):
            return False
        if isinstance(n, cst.Call):
            if not (is_method_call(ctx, n) and torch_op(ctx, n) in masks.PURE_METHODS):
                return False
    return True


def _mentions_mask(node: Optional[cst.CSTNode]) -> bool:
    """Whether an expression names a mask (`valid_mask`, `self.attn_mask`, `pad_mask[...]`)."""
    if node is None:
        return False
    for n in subtree(node):
        if isinstance(n, cst.Name) and "mask" in n.value.lower():
            return True
    return False
