"""Where gradients flow and what a ``torch.where`` guards: shared by the rules
about singular derivatives (NL104 zero-grad-sqrt, NL105 unclamped-acos,
NL109 where-nan-grad).
"""

from __future__ import annotations

import re
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import libcst as cst

from .analysis import HOST, INTEGER
from .engine import children, iter_tree, subtree
from .finding import SAFE
from .patterns import METADATA, look_through, arg, is_method_call, is_reference, number, subject, torch_op
from .rule import Context

# f -> the value that keeps f and its derivative finite in the masked lanes
# (the double-where filler): 1 for log/sqrt/division/negative powers, 0 for
# acos/asin/atanh, whose derivative is infinite at 1.
DOMAIN_OPS: Dict[str, str] = {
    "log": "1", "log2": "1", "log10": "1", "log1p": "1", "sqrt": "1", "rsqrt": "1",
    "reciprocal": "1", "acos": "0", "arccos": "0", "asin": "0", "arcsin": "0",
    "atanh": "0", "arctanh": "0",
}
DIV_OPS = frozenset({"div", "divide", "true_divide"})
POW_OPS = frozenset({"pow", "float_power"})
# calls a reused condition may contain: pure torch ops (no in-place, no randomness)
PURE_COND_OPS = frozenset(
    {
        "abs", "isfinite", "isnan", "isinf", "isposinf", "isneginf", "gt", "ge", "lt", "le", "eq",
        "ne", "greater", "less", "greater_equal", "less_equal", "not_equal", "logical_and",
        "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
        "norm", "vector_norm", "sum", "amax", "amin", "float", "bool", "to", "unsqueeze",
        "squeeze", "view", "reshape", "detach", "any", "all", "sign", "expand_as",
    }
)
COMPARE_OPS = frozenset(
    {"gt", "ge", "lt", "le", "eq", "ne", "greater", "less", "greater_equal", "less_equal", "not_equal"}
)
LOGIC_OPS = frozenset({"logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or", "bitwise_not"})
# calls that only reshape/cast: the value under them is the same value
PASS_THROUGH = frozenset(
    {
        "unsqueeze", "view", "reshape", "expand", "expand_as", "view_as", "reshape_as", "to",
        "type_as", "detach", "contiguous", "squeeze", "flatten", "float", "half", "double",
        "transpose", "permute", "t", "clone",
    }
)
_BARRIERS = (cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp, cst.IfExp, cst.BooleanOperation)
_SPACES = re.compile(r"\s+")


def const(node: cst.BaseExpression) -> Optional[float]:
    """A literal, or arithmetic on literals (``1 - 1e-7``, ``1 / 2``)."""
    value = number(node)
    if value is not None:
        return value
    if isinstance(node, cst.BinaryOperation):
        left, right = const(node.left), const(node.right)
        if left is None or right is None:
            return None
        op = node.operator
        try:
            if isinstance(op, cst.Add):
                return left + right
            if isinstance(op, cst.Subtract):
                return left - right
            if isinstance(op, cst.Multiply):
                return left * right
            if isinstance(op, cst.Divide):
                return left / right
        except ZeroDivisionError:
            return None
    return None


def strip(ctx, node: cst.BaseExpression) -> cst.BaseExpression:
    """Look through reshapes and casts (``x.float()``, ``x.unsqueeze(-1)``)."""
    return look_through(ctx, node, PASS_THROUGH, subscripts=False)


def text(ctx, node: cst.BaseExpression) -> str:
    """The expression's code without its own parentheses and whitespace."""
    bare = node.with_changes(lpar=(), rpar=()) if getattr(node, "lpar", None) else node
    return _SPACES.sub("", ctx.module.code_for_node(bare))


def domain_operand(ctx, node: cst.CSTNode) -> Optional[Tuple[str, cst.BaseExpression, str]]:
    """(name of f, the operand whose domain f restricts, filler) for a call or
    operator with a singular point: ``log(x)``, ``x.sqrt()``, ``a / x``,
    ``x ** 0.5``, ``x.pow(-1)``, ``acos(x)``."""
    if isinstance(node, cst.Call):
        op = torch_op(ctx, node)
        if op is None:
            return None
        op = op.rstrip("_") if op.endswith("_") and op.rstrip("_") in DOMAIN_OPS else op
        if op in DOMAIN_OPS:
            x = subject(ctx, node)
            return (op, x, DOMAIN_OPS[op]) if x is not None else None
        if op in DIV_OPS:
            divisor = arg(node, 0 if is_method_call(ctx, node) else 1, "other")
            if divisor is not None and number(divisor.value) is None:
                return ("div", divisor.value, "1")
            return None
        if op in POW_OPS:
            exponent = arg(node, 0 if is_method_call(ctx, node) else 1, "exponent")
            if exponent is not None and _singular_exponent(exponent.value):
                x = subject(ctx, node)
                return ("pow", x, "1") if x is not None else None
        return None
    if isinstance(node, cst.BinaryOperation):
        if isinstance(node.operator, cst.Divide) and number(node.right) is None:
            return ("div", node.right, "1")
        if isinstance(node.operator, cst.Power) and _singular_exponent(node.right):
            return ("pow", node.left, "1")
    return None


def _singular_exponent(node: cst.BaseExpression) -> bool:
    """A fractional exponent below 1 or a negative one (``-1``, ``-self.alpha.abs()``)."""
    e = const(node)
    if e is None:
        return isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus)
    return (e < 0 or e != int(e)) and e < 1


# the points where each f is singular (its derivative is infinite)
SINGULAR: Dict[str, Tuple[float, ...]] = {
    "log1p": (-1.0,), "acos": (1.0, -1.0), "arccos": (1.0, -1.0), "asin": (1.0, -1.0),
    "arcsin": (1.0, -1.0), "atanh": (1.0, -1.0), "arctanh": (1.0, -1.0),
}
# a name that stands for a small guard value
_SMALL_NAME = re.compile(r"eps|tiny|tol|thresh|zero|small|floor|min_?val|clamp", re.IGNORECASE)


def guard_value(ctx, node: cst.BaseExpression) -> Optional[float]:
    """The value a condition compares against: a literal, arithmetic on
    literals, with names of small guards (``eps``, ``self.tol``) and
    ``torch.finfo(...).eps``/``tiny`` counted as 0. None when unknown."""
    value = const(node)
    if value is not None:
        return value
    if isinstance(node, (cst.Name, cst.Attribute)):
        name = node.value if isinstance(node, cst.Name) else node.attr.value
        if isinstance(node, cst.Attribute) and name in ("eps", "tiny", "smallest_normal"):
            return 0.0
        return 0.0 if _SMALL_NAME.search(name) else None
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        inner = guard_value(ctx, node.expression)
        return -inner if inner is not None else None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Subtract, cst.Multiply)):
        left, right = guard_value(ctx, node.left), guard_value(ctx, node.right)
        if left is None or right is None:
            return None
        if isinstance(node.operator, cst.Add):
            return left + right
        if isinstance(node.operator, cst.Subtract):
            return left - right
        return left * right
    return None


class CondOperands:
    """What a `where` condition compares: (normalised text of one side, value
    of the other side) for ``x > 0``, ``x.abs() < 1``, ``(n != 0) & m``,
    ``x.gt(eps)``, a mask assigned from such a comparison."""

    def __init__(self, ctx, lookup) -> None:
        self.ctx = ctx
        self.lookup = lookup

    def collect(self, cond: cst.BaseExpression, out: Dict[str, List[float]], depth: int = 0) -> None:
        if depth > 6:
            return
        ctx = self.ctx
        if isinstance(cond, cst.Comparison):
            sides = [cond.left] + [c.comparator for c in cond.comparisons]
            for a, b in zip(sides, sides[1:]):
                self._pair(a, b, out)
                self._pair(b, a, out)
        elif isinstance(cond, cst.BinaryOperation) and isinstance(cond.operator, (cst.BitAnd, cst.BitOr, cst.BitXor)):
            self.collect(cond.left, out, depth + 1)
            self.collect(cond.right, out, depth + 1)
        elif isinstance(cond, cst.UnaryOperation) and isinstance(cond.operator, (cst.BitInvert, cst.Not)):
            self.collect(cond.expression, out, depth + 1)
        elif isinstance(cond, cst.BooleanOperation):
            self.collect(cond.left, out, depth + 1)
            self.collect(cond.right, out, depth + 1)
        elif isinstance(cond, cst.Name):
            value = self.lookup(cond.value)
            if value is not None:
                self.collect(value, out, depth + 1)
        elif isinstance(cond, cst.Call):
            op = torch_op(ctx, cond)
            if op in COMPARE_OPS:
                first = subject(ctx, cond)
                other = arg(cond, 0 if is_method_call(ctx, cond) else 1, "other")
                if first is not None and other is not None:
                    self._pair(first, other.value, out)
                    self._pair(other.value, first, out)
            elif op in LOGIC_OPS:
                if is_method_call(ctx, cond):
                    self.collect(cond.func.value, out, depth + 1)  # type: ignore[union-attr]
                for a in cond.args:
                    self.collect(a.value, out, depth + 1)
            elif op in ("bool", "to", "float", "unsqueeze", "view", "expand_as") and is_method_call(ctx, cond):
                self.collect(cond.func.value, out, depth + 1)  # type: ignore[union-attr]

    def _pair(self, side: cst.BaseExpression, other: cst.BaseExpression, out: Dict[str, List[float]]) -> None:
        if number(side) is not None:
            return
        value = guard_value(self.ctx, other)
        if value is None:
            return
        side = strip(self.ctx, side)
        out.setdefault(text(self.ctx, side), []).append(value)
        if isinstance(side, cst.Call) and torch_op(self.ctx, side) == "abs":
            inner = subject(self.ctx, side)
            if inner is not None:
                key = text(self.ctx, strip(self.ctx, inner))
                out.setdefault(key, []).append(value)
                out.setdefault(key, []).append(-value)


def _guards(values: List[float], f: str) -> bool:
    """A comparison against one of these values keeps f away from its singular point."""
    points = SINGULAR.get(f, (0.0,))
    return any(abs(v - p) <= 0.5 for v in values for p in points)


def guarded_calls(ctx, where: cst.Call, lookup) -> List[Tuple[cst.CSTNode, str, cst.BaseExpression, bool]]:
    """For ``torch.where(cond, a, b)``: the f(x) nodes inside a or b whose
    operand x the condition compares against f's singular point: (node, f,
    operand, in the true branch). Empty when the call is not a three-argument
    torch `where`."""
    if torch_op(ctx, where) != "where" or is_method_call(ctx, where):
        return []
    if any(a.star for a in where.args):
        return []
    cond = arg(where, 0, "condition")
    a = arg(where, 1, "input")
    b = arg(where, 2, "other")
    if cond is None or a is None or b is None:
        return []
    operands: Dict[str, List[float]] = {}
    CondOperands(ctx, lookup).collect(cond.value, operands)
    if not operands:
        return []
    out = []
    for branch, is_true in ((a.value, True), (b.value, False)):
        for node in subtree(branch, 400):
            if isinstance(node, cst.Call) and node is not branch and torch_op(ctx, node) == "where":
                continue
            found = domain_operand(ctx, node)
            if found is None or found[1] is None:
                continue
            f, x, _ = found
            x_bare = strip(ctx, x)
            values = operands.get(text(ctx, x_bare))
            if values is None and isinstance(x_bare, cst.UnaryOperation) and isinstance(x_bare.operator, cst.Minus):
                values = [-v for v in operands.get(text(ctx, strip(ctx, x_bare.expression)), [])]
            if values and _guards(values, f):
                out.append((node, f, x, is_true))
    return out


# ops whose result carries no gradient (integers, booleans, fresh tensors)
NOGRAD_OPS = frozenset(
    {
        "argmax", "argmin", "argsort", "count_nonzero", "bincount", "isnan", "isinf", "isfinite",
        "isposinf", "isneginf", "nonzero", "randint", "randperm", "arange", "zeros", "ones", "full",
        "empty", "eye", "linspace", "logspace", "rand", "randn", "rand_like", "randn_like",
        "randint_like", "zeros_like", "ones_like", "full_like", "empty_like", "numel", "bucketize",
        "searchsorted", "detach", "long", "int", "bool", "sign", "floor_divide", "one_hot", "tensor",
    }
    | COMPARE_OPS
    | LOGIC_OPS
)
_REDUCTIONS = frozenset({"sum", "mean", "cumsum", "amax", "amin", "max", "min", "prod", "float", "double", "half", "to", "type_as"})


# ops that cut a tensor into pieces: each piece carries what the tensor carries
_PARTS = frozenset({"split", "chunk", "unbind", "tensor_split"})


_DTYPE_NAMES = frozenset({
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long", "int32", "int",
    "int16", "int8", "uint8", "bool", "complex64", "complex128",
})
# arguments that are never differentiated: sizes, dtypes, devices, and indices
_SHAPE_KEYWORDS = frozenset({"dtype", "device", "layout", "size", "dim", "out", "index", "indices", "pin_memory"})
#: positions (in the function form) of index arguments: ``sparse_coo_tensor(indices, values)``
_INDEX_POSITIONS = {"sparse_coo_tensor": 0, "index_select": 2, "gather": 2, "scatter_add": 2, "scatter": 2,
                    "index_add": 2, "take": 1, "take_along_dim": 1}


def no_grad_value(ctx, node: cst.BaseExpression, depth: int = 0, assume: FrozenSet[cst.CSTNode] = frozenset(),
                  hops: int = 0) -> bool:
    """Proved to carry no gradient: literals and Python numbers, integer
    tensors, comparisons, counts of a comparison (``(m > 0).sum().float()``),
    fresh tensors (``torch.randn``, ``torch.arange``), ``.detach()``,
    ``p.grad``, ``w.data``, shapes and dtypes, and arithmetic, tuples and
    torch ops of these (``torch.sparse.sum`` of a ``sparse_coo_tensor`` of
    ``ones``: a vertex degree), where an op's index, size, dtype and device
    arguments never carry a gradient -- following a name to every
    assignment that reaches it; a value assigned where no gradient flows
    (inside ``with torch.no_grad():``) carries none wherever it is used. A
    call of a function of this file carries none when its returns carry none
    given what this call passes (``safe_normalize(cube_to_dir(s, gx, gy))``
    of a grid of constants, however many other callers pass a learned
    tensor): ``assume`` holds the parameters this reading takes to carry none;
    each such function entered (``hops``, three at most) reads its returns
    with a fresh depth budget."""
    if depth > 8:
        return False
    if number(node) is not None:
        return True
    rec = lambda n: no_grad_value(ctx, n, depth + 1, assume, hops)  # noqa: E731
    facts = ctx.facts
    if isinstance(node, cst.Comparison):
        return True
    if facts.dtype(node) in (HOST, INTEGER):
        return True
    if isinstance(node, cst.Name):
        inside = set(facts.scopes.ancestors(node))
        bindings = [b for b in facts.scopes.reaching(node) if b.node not in inside]
        if not all(rec(value) for value in _written_into(facts, node)):
            return False
        # the nearest binding decides (as everywhere in the analysis); an
        # augmented assignment adds its operand to the one before it
        for b in bindings:
            if b.kind == "augassign":
                if not rec(b.node.value):
                    return False
                continue
            if b.kind in ("assign", "walrus"):
                # a value without gradient, or one computed under `with torch.no_grad():`
                # (rendered predictions, then post-processed)
                return (b.value is not None and rec(b.value)) or not facts.grad_flows(b.node, depth + 1)
            if b.kind == "param":
                return b.node in assume or depth < 4 and _passed_without_grad(facts, b, depth)
            return b.kind == "for" and _element_of(b, node.value, rec)
        return False
    if isinstance(node, cst.UnaryOperation):
        return rec(node.expression)
    if isinstance(node, cst.BinaryOperation):
        return rec(node.left) and rec(node.right)
    if isinstance(node, cst.IfExp):
        return rec(node.body) and rec(node.orelse)
    if isinstance(node, cst.Subscript):
        return rec(node.value)
    if isinstance(node, cst.Attribute) and node.attr.value in ("grad", "data"):
        return True  # `p.grad`, `w.data`: no graph behind them
    if isinstance(node, cst.Attribute) and node.attr.value in METADATA:
        return True  # `x.shape`, `x.device`, `torch.float32`'s kin below
    if isinstance(node, cst.Attribute) and (ctx.resolve(node) or "").startswith("torch.") and (
            ctx.resolve(node) or "").rsplit(".", 1)[-1] in _DTYPE_NAMES:
        return True
    if isinstance(node, (cst.Tuple, cst.List)):
        return all(not isinstance(e, cst.StarredElement) and rec(e.value) for e in node.elements)
    if isinstance(node, cst.Call):
        op = torch_op(ctx, node)
        if op is None and (ctx.resolve(node.func) or "").startswith("torch.sparse."):
            op = (ctx.resolve(node.func) or "").rsplit(".", 1)[-1]  # `torch.sparse.sum(A)`
        if op is None:
            # a function of this file whose every return carries no gradient
            # (`count = _participation(group)` that builds a torch.tensor and all-reduces it)
            if isinstance(node.func, cst.Name) and ctx.resolve(node.func) is None and hops < 3:
                func = facts.scopes.function_named(node.func.value, node)
                returns = facts.scopes.returns(func) if func is not None else []
                if not returns or len(returns) > 4:
                    return False
                given = _no_grad_params(func, node, rec)
                return all(no_grad_value(ctx, r, 0, assume | (given or frozenset()), hops + 1) for r in returns)
            return False
        if op in METADATA:
            return True  # `x.size(0)`, `x.dim()`
        if op in NOGRAD_OPS:
            return not any(a.keyword is not None and a.keyword.value == "requires_grad" for a in node.args)
        if op in _REDUCTIONS or op in _PARTS or op in PASS_THROUGH:
            inner = subject(ctx, node)
            return inner is not None and rec(inner)
        # any other torch op of inputs that carry no gradient has none either
        method = is_method_call(ctx, node)
        skip = _INDEX_POSITIONS.get(op, -1) - (1 if method else 0)
        inputs = [a.value for i, a in enumerate(node.args)
                  if not a.star and (a.keyword is None and i != skip
                                     or a.keyword is not None and a.keyword.value not in _SHAPE_KEYWORDS)]
        if method:
            inputs.append(node.func.value)  # type: ignore[union-attr]
        return bool(inputs) and all(rec(i) for i in inputs)
    return False


def _no_grad_params(func: cst.FunctionDef, call: cst.Call, rec) -> Optional[FrozenSet[cst.CSTNode]]:
    """The parameters of ``func`` to which ``call`` passes a value without
    gradient (an argument, or the default it leaves); None when the call
    unpacks ``*args``/``**kwargs`` or ``func`` takes them."""
    params = func.params
    if isinstance(params.star_arg, cst.Param) or params.star_kwarg is not None or any(a.star for a in call.args):
        return None
    positional = [*params.posonly_params, *params.params]
    if positional and positional[0].name.value in ("self", "cls"):
        return None  # a method named by a bare call: not this function's call shape
    by_name = {p.name.value: p for p in (*positional, *params.kwonly_params)}
    passed: Dict[cst.CSTNode, cst.BaseExpression] = {}
    index = 0
    for a in call.args:
        if a.keyword is None:
            if index >= len(positional):
                return None
            passed[positional[index]] = a.value
            index += 1
        elif a.keyword.value in by_name:
            passed[by_name[a.keyword.value]] = a.value
        else:
            return None
    out = set()
    for p in by_name.values():
        value = passed.get(p, p.default)
        if value is not None and rec(value):
            out.add(p)
    return frozenset(out)


def _passed_without_grad(facts, binding, depth: int) -> bool:
    """A parameter that every call of its function gives a value without a
    gradient (``sinc(t)`` with ``t = torch.linspace(...)`` in each caller, a
    ``slerp(z1, z2, a)`` of two ``torch.randn`` draws), read in the
    analysis of each call's file (:meth:`Facts.arguments_for`)."""
    given = facts.arguments_for(binding, defaults=True)
    return bool(given) and all(no_grad_value(other.ctx, value, depth + 1) for other, value in given)


def _element_of(binding, name: str, rec) -> bool:
    """A loop variable carries no gradient: ``for x in xs`` when ``xs`` does
    not, ``for a, b in zip(xs, ys)`` when the matching iterable does not."""
    target = binding.node.target
    iterable = binding.value
    if isinstance(target, cst.Name):
        return rec(iterable)
    if not isinstance(target, (cst.Tuple, cst.List)):
        return False
    names = [e.value.value if isinstance(e.value, cst.Name) else None for e in target.elements]
    if name not in names or not (isinstance(iterable, cst.Call) and isinstance(iterable.func, cst.Name)
                                 and iterable.func.value == "zip"):
        return False
    args = [a.value for a in iterable.args if not a.star]
    position = names.index(name)
    return position < len(args) and rec(args[position])


def _written_into(facts, name: cst.Name) -> List[cst.BaseExpression]:
    """The values written into the tensor a name holds, in its function:
    ``name[i] = v``, ``name[i] += v``, ``name += v``."""
    scope = facts.scopes.enclosing_function(name) or facts.scopes.module
    out: List[cst.BaseExpression] = []
    for n, _ in iter_tree(scope):
        if isinstance(n, cst.AugAssign):
            target = n.target
        elif isinstance(n, cst.Assign) and len(n.targets) == 1 and isinstance(n.targets[0].target, cst.Subscript):
            target = n.targets[0].target
        else:
            continue
        while isinstance(target, cst.Subscript):
            target = target.value
        if isinstance(target, cst.Name) and target.value == name.value:
            out.append(n.value)
    return out


class _Scopes:
    """Names assigned in the current function: name -> values (None for an
    assignment that cannot be followed: tuple targets, augmented assignments,
    loop targets, parameters)."""

    def __init__(self) -> None:
        self.stack: List[Dict[str, List[Optional[cst.BaseExpression]]]] = [{}]

    def push(self, params: Optional[cst.Parameters] = None) -> None:
        scope: Dict[str, List[Optional[cst.BaseExpression]]] = {}
        if params is not None:
            for p in list(params.posonly_params) + list(params.params) + list(params.kwonly_params):
                scope.setdefault(p.name.value, []).append(None)
            for star in (params.star_arg, params.star_kwarg):
                if isinstance(star, cst.Param):
                    scope.setdefault(star.name.value, []).append(None)
        self.stack.append(scope)

    def pop(self) -> None:
        if len(self.stack) > 1:
            self.stack.pop()

    def bind(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if isinstance(target, cst.Name):
            self.stack[-1].setdefault(target.value, []).append(value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for el in target.elements:
                self.bind(el.value, None)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, None)

    def lookup(self, name: str) -> Optional[cst.BaseExpression]:
        """The value of a name assigned exactly once so far in this function."""
        values = self.stack[-1].get(name)
        if values is not None and len(values) == 1:
            return values[0]
        return None

    def last(self, name: str) -> Optional[cst.BaseExpression]:
        """The latest value assigned to a name in this function (None when it
        is a parameter, a loop target or the like)."""
        values = self.stack[-1].get(name)
        return values[-1] if values else None


class ScopeTracking:
    """Mixin: keeps ``self.scopes`` (single assignments per function)."""

    def _init_tracking(self) -> None:
        self.scopes = _Scopes()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.push(node.params)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.scopes.push()

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.scopes.pop()

    def visit_With(self, node: cst.With) -> None:
        for item in node.items:
            if item.asname is not None:
                self.scopes.bind(item.asname.name, None)  # type: ignore[arg-type]

    def leave_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self.scopes.bind(t.target, node.value)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.scopes.bind(node.target, node.value)

    def leave_AugAssign(self, node: cst.AugAssign) -> None:
        self.scopes.bind(node.target, None)

    def visit_For(self, node: cst.For) -> None:
        self.scopes.bind(node.target, None)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.scopes.bind(node.target, None)
