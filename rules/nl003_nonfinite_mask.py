from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

import libcst as cst

from nanlint.engine import subtree, iter_tree

from nanlint.dtypes import FLOAT32_MAX, fmt
from nanlint.finding import SAFE, UNSAFE
from nanlint.patterns import mask_like, arg, is_method_call, number, subject, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid

FLOAT64_MAX = 1.7976931348623157e308

FILL_OPS = frozenset({"masked_fill", "masked_fill_"})
TRIANGLE_OPS = frozenset({"triu", "tril", "triu_", "tril_"})
# Ops that consume a filled tensor without any arithmetic that -inf could turn into NaN:
# selection (a -inf entry is simply never chosen, like a running-max initialiser) and exp
# (exp(-inf) = 0 exactly, the intended value).
SAFE_CONSUMERS = frozenset(
    {
        "max", "amax", "argmax", "min", "amin", "argmin", "topk", "sort", "argsort",
        "kthvalue", "cummax", "cummin", "exp", "exp_",
    }
)
# `torch.where(torch.isnan(x), inf, x)`: the branch repairs or propagates special values
SPECIAL_VALUE_TESTS = frozenset({"isnan", "isinf", "isposinf", "isneginf", "isfinite", "isreal"})
# Ops that keep a tensor's dtype (for "known to be float32")
_SAME_DTYPE = frozenset(
    {
        "masked_fill", "masked_fill_", "view", "reshape", "unsqueeze", "squeeze", "expand",
        "expand_as", "flatten", "permute", "transpose", "contiguous", "clone", "detach",
        "repeat", "tril", "triu", "__getitem__",
    }
)
_FLOAT32_NAMES = frozenset({"torch.float32", "torch.float", "numpy.float32"})
_FLOAT64_NAMES = frozenset({"torch.float64", "torch.double", "numpy.float64"})
_METADATA = frozenset({"shape", "size", "dtype", "device", "ndim", "dim", "numel", "is_cuda", "layout"})
_CONTAINER_CALLS = frozenset({"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque"})
# pure tensor methods: evaluating them twice (in the fix) costs time but changes nothing
_PURE_METHODS = _SAME_DTYPE | frozenset({"float", "half", "bfloat16", "to", "type_as", "t", "mT"})


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
    a local name, module constant or parameter default -- used as a mask:
    passed to `masked_fill`/`masked_fill_`, as a `torch.where` branch, in a
    masked index assignment (`x[mask] = -inf`), in `torch.triu`/`torch.tril`
    of a tensor filled with -inf, and multiplied by a mask (`mask * -inf`).
    Also flags finite fill literals outside the range of a target dtype
    (`-1e9`, `1e10`: float16's max is 65504) and a hard-coded
    `torch.finfo(torch.float32).min` in those places, unless the filled tensor
    is known to be float32 (`x.float().masked_fill(...)`).

    Not flagged: `torch.finfo(x.dtype).min`, in-range fills such as `-1e4`,
    `torch.full(..., -inf)` used as a running-max initialiser, comparisons
    with inf, `torch.where(torch.isnan(x), ...)`-style repairs of special
    values, index assignments into dicts and lists, and fills consumed
    directly by a selection (`max`, `topk`, `sort`...) or by `exp`, where -inf
    is exactly what is meant (it is never selected; exp(-inf) = 0).

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
        re.compile(r"\binf\b|Inf\b|INF\b|finfo|[Ii]nfinity|\d[eE]\+?\d|\d{5}|\d_\d{3}|\d\s*\*\*\s*\(?\d|0[xX]"),
    )
    valid = [
        Valid("import torch\ns = s.masked_fill(~m, torch.finfo(s.dtype).min)\n"),
        Valid("import torch\ns = s.masked_fill(~m, -1e4)\n"),
        Valid("import torch\nbest = torch.full((n,), float('-inf'))\n"),
        Valid("import torch\nbad = torch.isinf(x) | (x == float('-inf'))\n"),
        Valid("best_score = float('-inf')\nfor s in scores:\n    best_score = max(best_score, s)\n"),
        Valid("import torch\ns = s.float().masked_fill(~m, -1e9)\n"),
        Valid("timings = {}\ntimings['fwd'] = float('inf')\n"),
        Valid("import torch\nidx = s.masked_fill(~m, float('-inf')).argmax(-1)\n"),
        Valid("import torch\nd = (g[:, None] - g[None]).masked_fill(upper, float('-inf')).exp()\n"),
        Valid("import torch\ny = torch.where(torch.isnan(x), float('inf'), x)\n"),
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
        # name -> value (None: a parameter, loop variable or unpacked name), per function
        self.scopes: List[Dict[str, Optional[cst.BaseExpression]]] = [{}]
        self.loop_vars: List[Set[str]] = [set()]
        self._parent_map: Optional[Dict[int, cst.CSTNode]] = None

    # -- scopes ------------------------------------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        scope: Dict[str, Optional[cst.BaseExpression]] = {}
        params = node.params
        for p in (*params.posonly_params, *params.params, *params.kwonly_params):
            scope[p.name.value] = p.default
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                scope[star.name.value] = None
        self.scopes.append(scope)
        self.loop_vars.append(set())

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.pop()
        self.loop_vars.pop()

    def leave_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._bind(target.target, node.value)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._bind(node.target, node.value)

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target, None)
        self.loop_vars[-1].update(n.value for n in subtree(node.target) if isinstance(n, cst.Name))

    def _bind(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        scope = self.scopes[-1]
        if isinstance(target, cst.Name):
            scope[target.value] = value
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(element.value, None)

    def _lookup(self, name: str) -> Optional[cst.BaseExpression]:
        if name in self.scopes[-1]:
            return self.scopes[-1][name]
        return self.scopes[0].get(name)

    # -- detection ---------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        op = torch_op(self.ctx, node)
        if op is None:
            return
        method = is_method_call(self.ctx, node)
        if op in FILL_OPS:
            value = arg(node, 1 if method else 2, "value")
            filled = subject(self.ctx, node)
            if value is not None:
                self._check(value.value, filled, "masked_fill", node, None)
        elif op == "where":
            self._check_where(node, method)
        elif op in TRIANGLE_OPS:
            inner = subject(self.ctx, node)
            if inner is not None:
                self._check_triangle(inner, op)

    # -- where does the filled tensor go? ------------------------------------------------
    def _parents(self) -> Dict[int, cst.CSTNode]:
        """child id -> parent for the whole file, built once and only for files with a
        candidate finding."""
        if self._parent_map is None:
            self._parent_map = {}
            for node, parent in iter_tree(self.ctx.module):
                if parent is not None:
                    self._parent_map[id(node)] = parent
        return self._parent_map

    def _only_selected(self, call: cst.Call) -> bool:
        """Whether the filled tensor is only ever selected from (`max`, `topk`, ...) or
        exponentiated: directly, through a name assigned in the same function
        (`s = x.masked_fill(m, -inf)`, then only `s.topk(k)`), or through the return value
        of a function whose every call in the file is (`torch.exp(segment_sum(a))`)."""
        return self._flows_to_selection(call, self._parents(), 0)

    def _flows_to_selection(self, expr: cst.CSTNode, parents: Dict[int, cst.CSTNode], depth: int) -> bool:
        if depth > 4:
            return False
        # through shape changes and further fills to the consumer
        for _ in range(8):
            parent = parents.get(id(expr))
            call: Optional[cst.CSTNode] = None
            if isinstance(parent, cst.Attribute) and parent.value is expr:
                call = parents.get(id(parent))
                if not (isinstance(call, cst.Call) and call.func is parent):
                    return False
            elif isinstance(parent, cst.Arg) and parent.keyword is None:
                call = parents.get(id(parent))
                if not (isinstance(call, cst.Call) and call.args and call.args[0] is parent):
                    return False
                if is_method_call(self.ctx, call):
                    return False
            elif isinstance(parent, cst.Assign) and parent.value is expr:
                return self._name_flows(parent, parents, depth)
            elif isinstance(parent, cst.Return):
                return self._calls_flow(expr, parents, depth)
            else:
                return False
            op = torch_op(self.ctx, call)
            if op in SAFE_CONSUMERS:
                return True
            if op in FILL_OPS or op in _PURE_METHODS:
                expr = call
                continue
            return False
        return False

    def _name_flows(self, assign: cst.Assign, parents: Dict[int, cst.CSTNode], depth: int) -> bool:
        """`name = <filled>`: every later use of name in the function (until it is
        reassigned) flows to a selection."""
        if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
            return False
        name = assign.targets[0].target.value
        body = self._enclosing(assign, parents)
        inside = {id(n) for n in subtree(assign)}
        uses = 0
        started = False
        reassigned: Optional[Set[int]] = None
        for node, parent in iter_tree(body):
            if node is assign:
                started = True
                continue
            if not started or id(node) in inside:
                continue
            if reassigned is not None and id(node) not in reassigned:
                break  # past `name = ...`: later uses read the new value
            if isinstance(node, cst.Assign) and reassigned is None and any(
                isinstance(t.target, cst.Name) and t.target.value == name for t in node.targets
            ):
                reassigned = {id(n) for n in subtree(node)}  # its value still reads ours
                continue
            if isinstance(node, (cst.FunctionDef, cst.Lambda, cst.ClassDef)) and node is not body:
                if any(isinstance(n, cst.Name) and n.value == name for n in subtree(node)):
                    return False  # captured by a closure: cannot follow
                continue
            if not (isinstance(node, cst.Name) and node.value == name):
                continue
            if isinstance(parent, (cst.AssignTarget, cst.Param)) or (
                isinstance(parent, cst.Attribute) and parent.attr is node
            ):
                continue
            if isinstance(parent, cst.Attribute) and parent.attr.value in _METADATA:
                continue  # s.shape, s.size(0), s.dtype: no values read
            uses += 1
            if not self._flows_to_selection(node, parents, depth + 1):
                return False
        return uses > 0

    def _calls_flow(self, returned: cst.CSTNode, parents: Dict[int, cst.CSTNode], depth: int) -> bool:
        """`return <filled>` in def f: every call f(...) in the file flows to a selection."""
        func = self._enclosing(returned, parents)
        if not isinstance(func, cst.FunctionDef):
            return False
        name = func.name.value
        calls = 0
        for node, _ in iter_tree(self.ctx.module):
            if isinstance(node, cst.Call):
                callee = node.func
                if (isinstance(callee, cst.Name) and callee.value == name) or (
                    isinstance(callee, cst.Attribute) and callee.attr.value == name
                ):
                    calls += 1
                    if not self._flows_to_selection(node, parents, depth + 1):
                        return False
        return calls > 0

    @staticmethod
    def _enclosing(node: cst.CSTNode, parents: Dict[int, cst.CSTNode]) -> cst.CSTNode:
        current = parents.get(id(node))
        while current is not None and not isinstance(current, (cst.FunctionDef, cst.Module)):
            current = parents.get(id(current))
        return current if current is not None else node

    def _check_where(self, node: cst.Call, method: bool) -> None:
        if method:  # x.where(cond, other)
            cond, other = arg(node, 0, "condition"), arg(node, 1, "other")
            branches = [(other, node.func.value)] if other is not None else []  # type: ignore[union-attr]
        else:
            cond, a, b = arg(node, 0, "condition"), arg(node, 1, "input"), arg(node, 2, "other")
            if a is None or b is None:
                return
            branches = [(a, b.value), (b, a.value)]
        if cond is not None and self._special_value_test(cond.value):
            return
        for branch, filled in branches:
            assert branch is not None
            self._check(branch.value, filled, "where", node, cond.value if cond is not None else None)

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

    def _check_triangle(self, inner: cst.BaseExpression, op: str) -> None:
        if isinstance(inner, cst.Name):
            bound = self._lookup(inner.value)
            if bound is None:
                return
            inner = bound
        literal = self._infinite_filler(inner)
        if literal is None:
            return
        hazard = self._hazard(literal, None)
        if hazard is None or hazard.finite:
            return
        self.report(
            literal,
            f"`torch.{op.rstrip('_')}` of a tensor filled with {hazard.quoted}: every row this mask fully "
            f"masks, alone or combined with a padding mask, is NaN after softmax (-inf - -inf = NaN); "
            f"fill with `torch.finfo(dtype).min` instead",
        )

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
            if isinstance(t, cst.Subscript) and self._tensor_index(t):
                self._check(node.value, t.value, "index", None, t)

    def _tensor_index(self, node: cst.Subscript) -> bool:
        """Whether `x[...] = v` looks like a masked tensor assignment rather than an
        item of a dict or list."""
        container = node.value
        if isinstance(container, cst.Name):
            bound = self._lookup(container.value)
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
            if isinstance(value, cst.Name) and value.value in self.loop_vars[-1]:
                return False
        return True

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Multiply):
            return
        for lit, other in ((node.left, node.right), (node.right, node.left)):
            hazard = self._hazard(lit, None)
            if hazard is None:
                continue
            if self._nonzero(other):
                continue
            if hazard.finite:
                if not mask_like(other, self._lookup):
                    continue
                self.report(
                    lit,
                    f"{hazard.quoted} times a mask: {self._range_text(hazard)}, so the product is "
                    f"{'-' if hazard.value < 0 else ''}inf wherever the mask is set in a half-precision "
                    f"tensor, and a fully masked row is NaN after softmax; use `torch.finfo(dtype).min` "
                    f"(or a `masked_fill`) instead",
                )
            else:
                self.report(
                    lit,
                    f"{hazard.quoted} times a mask: 0 * inf is NaN, so every entry where the mask "
                    f"is 0 becomes NaN; use `torch.finfo(dtype).min` (or a `masked_fill`) instead",
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
            if isinstance(node, cst.Attribute) and node.attr.value in ("min", "max") and isinstance(node.value, cst.Call):
                call = node.value
                callee = self.ctx.resolve(call.func)
                if callee in ("torch.finfo", "numpy.finfo") and len(call.args) == 1:
                    dtype = self.ctx.resolve(call.args[0].value)
                    if isinstance(call.args[0].value, cst.SimpleString):
                        dtype = "torch." + str(call.args[0].value.evaluated_value)
                    big = FLOAT32_MAX if dtype in _FLOAT32_NAMES else FLOAT64_MAX if dtype in _FLOAT64_NAMES else None
                    if big is not None:
                        return -big if node.attr.value == "min" else big
        return None

    def _hazard(self, node: cst.BaseExpression, filled: Optional[cst.BaseExpression]) -> Optional[Hazard]:
        literal = True
        short = self.ctx.code(node).strip()
        quoted = f"`{short}`"
        v = self._value(node)
        if v is None and isinstance(node, cst.Name):
            bound = self._lookup(node.value)
            if bound is None:
                return None
            v = self._value(bound)
            literal = False
            if v is not None:
                quoted = f"`{short}` (= `{self.ctx.code(bound).strip()}`)"
        if v is None:
            return None
        if math.isnan(v):
            return None
        if math.isinf(v):
            return Hazard(v, quoted, short, literal, False, ())
        overflows = tuple(d.name for d in self.ctx.dtypes if abs(v) > d.max)
        if not overflows:
            return None
        if filled is not None and abs(v) <= FLOAT32_MAX and self._known_float32(filled):
            return None
        return Hazard(v, quoted, short, literal, True, overflows)

    def _range_text(self, hazard: Hazard) -> str:
        names = [d for d in self.ctx.dtypes if d.name in hazard.overflows]
        return (
            f"{fmt(hazard.value)} is outside the {' and '.join(d.name for d in names)} range "
            f"(max {' / '.join(fmt(d.max) for d in names)})"
        )

    def _known_float32(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        if depth > 6:
            return False
        if isinstance(node, cst.Name):
            bound = self._lookup(node.value)
            return bound is not None and self._known_float32(bound, depth + 1)
        if isinstance(node, cst.Subscript):
            return self._known_float32(node.value, depth + 1)
        if isinstance(node, cst.BinaryOperation):
            return self._known_float32(node.left, depth + 1) or self._known_float32(node.right, depth + 1)
        if not isinstance(node, cst.Call):
            return False
        for a in node.args:
            if a.keyword is not None and a.keyword.value == "dtype":
                return self.ctx.resolve(a.value) in _FLOAT32_NAMES | _FLOAT64_NAMES
        op = torch_op(self.ctx, node)
        if not is_method_call(self.ctx, node):
            return False
        receiver = node.func.value  # type: ignore[union-attr]
        if op in ("float", "double"):
            return True
        if op in ("to", "type") and node.args:
            return self.ctx.resolve(node.args[0].value) in _FLOAT32_NAMES | _FLOAT64_NAMES
        if op in _SAME_DTYPE:
            return self._known_float32(receiver, depth + 1)
        return False

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
    ) -> None:
        """value: the fill; filled: the tensor it goes into; where: masked_fill, where or
        index; call: the filling call; mask: the where condition or the index."""
        hazard = self._hazard(value, filled)
        if hazard is None:
            return
        if hazard.value > 0 and not hazard.finite and where != "masked_fill" and not _mentions_mask(mask):
            # +inf outside masked_fill is a value, not a mask: an infinite KL divergence or
            # variance (`result[p.alpha <= 1] = inf`), a distance for a min
            return
        if filled is not None and self._value(filled) is not None:
            # `torch.where(m, 0.0, -inf)`: no tensor to take the dtype from; the result has
            # the default dtype (float32), where a finite -1e10 is representable
            if hazard.finite:
                return
            filled = None
        if filled is not None and isinstance(filled, cst.Name):
            bound = self._lookup(filled.value)
            if bound is not None and self._value(bound) is not None:
                if hazard.finite:
                    return
                filled = None
        if call is not None and self._only_selected(call):
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
        self.report(value, message, self._fix(value, filled, hazard))

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
            if not (is_method_call(ctx, n) and torch_op(ctx, n) in _PURE_METHODS):
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
