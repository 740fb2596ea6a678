"""Small, cheap expression predicates shared by rules.

Everything here looks at one expression (and, where a ``lookup`` is given --
an object with ``lookup_node(name)`` and optionally ``call_facts(call)``, see
``nanlint.analysis.values`` -- at what names and calls stand for); nothing
walks the whole file.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import libcst as cst

from .resolve import dotted_name
from .rule import Context

# -- literals ---------------------------------------------------------------


def number(node: cst.BaseExpression) -> Optional[float]:
    """The value of a numeric literal (``1e-12``, ``-5``, ``2 ** 30``,
    ``float('inf')``, ``-math.inf``), else None."""
    if isinstance(node, cst.Float):
        try:
            return float(node.value.replace("_", ""))
        except ValueError:
            return None
    if isinstance(node, cst.Integer):
        try:
            return float(int(node.value.replace("_", ""), 0))
        except (ValueError, OverflowError):
            return None
    if isinstance(node, cst.UnaryOperation):
        inner = number(node.expression)
        if inner is None:
            return None
        if isinstance(node.operator, cst.Minus):
            return -inner
        if isinstance(node.operator, cst.Plus):
            return inner
        return None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power):
        base, exp = number(node.left), number(node.right)
        if base is None or exp is None:
            return None
        try:
            return float(base ** exp)
        except (OverflowError, ZeroDivisionError, ValueError):
            return math.inf
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "float":
        if len(node.args) == 1 and isinstance(node.args[0].value, cst.SimpleString):
            text = node.args[0].value.evaluated_value
            if isinstance(text, str):
                text = text.strip().lower()
                if text in ("inf", "+inf", "infinity", "+infinity"):
                    return math.inf
                if text in ("-inf", "-infinity"):
                    return -math.inf
        return None
    if isinstance(node, (cst.Attribute, cst.Name)):
        name = dotted_name(node)
        if name is not None and name.split(".")[-1] == "inf" and "." in name:
            head = name.split(".")[0]
            if head in ("math", "torch", "np", "numpy"):
                return math.inf
    return None


# -- calls ------------------------------------------------------------------

# Names that are conventionally other math libraries even when their import
# cannot be seen (``from triton.language import math``): never torch tensors.
NON_TORCH_MODULES = frozenset(
    {"math", "cmath", "np", "numpy", "jnp", "jax", "tl", "triton", "sympy", "sp", "mpmath", "scipy", "tf", "random"}
)

TORCH_NAMESPACES = ("torch", "torch.special", "torch.nn.functional", "torch.linalg", "torch.Tensor")


def torch_op(ctx: Context, call: cst.Call) -> Optional[str]:
    """The short name of a torch operation, whatever the spelling:
    ``torch.exp(x)``, ``T.exp(x)``, ``exp(x)`` (from torch import exp),
    ``F.softmax(x)``, ``x.exp()`` -> "exp" / "softmax". Method calls count when
    the receiver is not an imported module (``np.exp`` and ``math.exp`` are not
    torch). Returns None otherwise."""
    qualified, method = ctx.callee(call)
    if qualified is not None:
        module, _, short = qualified.rpartition(".")
        if module in TORCH_NAMESPACES:
            return short
        return None
    if method is not None:
        receiver = call.func.value  # type: ignore[union-attr]
        while isinstance(receiver, cst.Attribute):
            receiver = receiver.value
        if isinstance(receiver, cst.Name) and receiver.value in NON_TORCH_MODULES:
            return None
    return method


def additive_terms(node: cst.BaseExpression) -> Optional[List[cst.BaseExpression]]:
    """The operands of an addition chain ``a + b + c``, left to right; a
    parenthesised sum inside stays one operand. None when not an addition."""
    if not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add)):
        return None
    out: List[cst.BaseExpression] = []
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, cst.BinaryOperation) and isinstance(cur.operator, cst.Add) and (
            cur is node or not cur.lpar
        ):
            stack.append(cur.right)
            stack.append(cur.left)
        else:
            out.append(cur)
    return out


def is_reference(node: cst.BaseExpression) -> bool:
    """A name or attribute chain (``x``, ``self.scale``): reading it twice in a
    fix is harmless, unlike a call."""
    return dotted_name(node) is not None


def is_method_call(ctx: Context, call: cst.Call) -> bool:
    qualified, method = ctx.callee(call)
    return qualified is None and method is not None


def arg(call: cst.Call, position: Optional[int], keyword: Optional[str] = None) -> Optional[cst.Arg]:
    """The argument at ``position`` (counting positional arguments only) or
    passed as ``keyword``."""
    if keyword is not None:
        for a in call.args:
            if a.keyword is not None and a.keyword.value == keyword:
                return a
    if position is not None:
        index = 0
        for a in call.args:
            if a.keyword is None and not a.star:
                if index == position:
                    return a
                index += 1
    return None


def subject(ctx: Context, call: cst.Call) -> Optional[cst.BaseExpression]:
    """The tensor an op applies to: the receiver of a method call, else the
    first positional argument."""
    if is_method_call(ctx, call):
        assert isinstance(call.func, cst.Attribute)
        return call.func.value
    first = arg(call, 0)
    return first.value if first is not None else None


def last_name(node: cst.BaseExpression) -> Optional[str]:
    """``c`` for ``c`` or ``a.b.c``; None for anything else."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return None


def name_chain(node: cst.BaseExpression, partial: bool = False) -> List[str]:
    """The names along ``self.blocks[0].fc.weight.data`` (root first), through
    attributes, subscripts and calls (``super().x`` -> ["super", "x"]). A chain
    that does not start at a name (``f()[0].x`` does, ``(a + b).x`` does not)
    gives [] -- or, with ``partial``, the names found before it."""
    names: List[str] = []
    while True:
        if isinstance(node, cst.Attribute):
            names.append(node.attr.value)
            node = node.value
        elif isinstance(node, cst.Subscript):
            node = node.value
        elif isinstance(node, cst.Call):
            node = node.func
        elif isinstance(node, cst.Name):
            names.append(node.value)
            break
        elif partial:
            break
        else:
            return []
    names.reverse()
    return names


def look_through(ctx: Context, node: cst.BaseExpression, methods: FrozenSet[str],
                 subscripts: bool = True) -> cst.BaseExpression:
    """The tensor under reshapes, casts and selections that keep its values
    (or its zeros): strips method calls named in ``methods`` (``x.float()``,
    ``(n + eps).unsqueeze(-1)``) and, with ``subscripts``, indexing
    (``x[..., None]``). At most 8 layers."""
    for _ in range(8):
        if subscripts and isinstance(node, cst.Subscript):
            node = node.value
            continue
        if (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value in methods
            and is_method_call(ctx, node)
        ):
            node = node.func.value
            continue
        break
    return node


_WIDE_DTYPES = ("torch.float32", "torch.float", "torch.float64", "torch.double")


def is_upcast(ctx: Context, node: cst.BaseExpression) -> bool:
    """``x.float()``, ``x.double()``, ``x.to(torch.float32)``, ``x.type(torch.float64)``:
    what follows runs in float32 or wider."""
    if not (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)):
        return False
    method = node.func.attr.value
    if method in ("float", "double") and not node.args:
        return True
    if method in ("to", "type"):
        return any(ctx.resolve(a.value) in _WIDE_DTYPES for a in node.args)
    return False


def calls_in_order(node: cst.CSTNode):
    """The calls in an expression or small statement in evaluation order
    (arguments and receivers before the call), not looking into lambdas or
    nested definitions. Iterative: deep expressions do not hit the recursion
    limit."""
    from .engine import children

    stack: List[Tuple[cst.CSTNode, bool]] = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        if expanded:
            if isinstance(current, cst.Call):
                yield current
            continue
        if isinstance(current, (cst.Lambda, cst.FunctionDef, cst.ClassDef)):
            continue
        stack.append((current, True))
        for child in reversed(children(current)):
            if not isinstance(child, _LEAVES):
                stack.append((child, False))


# tokens, whitespace and literals: no call below them
_LEAVES = (
    cst.BaseParenthesizableWhitespace, cst.Comment, cst.Newline, cst.EmptyLine, cst.TrailingWhitespace,
    cst.BaseBinaryOp, cst.BaseBooleanOp, cst.BaseUnaryOp, cst.BaseCompOp, cst.BaseAugOp,
    cst.Comma, cst.Dot, cst.LeftParen, cst.RightParen, cst.LeftSquareBracket, cst.RightSquareBracket,
    cst.LeftCurlyBrace, cst.RightCurlyBrace, cst.Colon, cst.AssignEqual, cst.Semicolon,
    cst.SimpleString, cst.Integer, cst.Float, cst.Name,
)


def snake_words(name: str) -> str:
    """``optimizerD`` -> ``optimizer_d``, ``gradScaler`` -> ``grad_scaler``: for word matching on names."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# -- bindings -----------------------------------------------------------------


# -- value ranges -------------------------------------------------------------

#: tensor attributes and methods that read no values (``x.shape``, ``x.size(0)``)
METADATA = frozenset({"dtype", "shape", "device", "ndim", "size", "dim", "numel", "is_cuda", "requires_grad",
                      "layout"})

NONNEG = "nonneg"  # >= 0
NONPOS = "nonpos"  # <= 0
UPPER = "upper"  # bounded above by a constant
LOWER = "lower"  # bounded below by a constant
MAXLIKE = "maxlike"  # a max/logsumexp of its operand: x - it is <= 0

Facts = FrozenSet[str]
_NONE: Facts = frozenset()

_NONNEG_OPS = frozenset(
    {
        "abs", "square", "relu", "relu6", "softplus", "exp", "sigmoid", "softmax",
        "norm", "vector_norm", "matrix_norm", "cdist", "sqrt", "rsqrt", "arange",
        "numel", "var", "std", "rand", "ones", "ones_like",
        "zeros", "zeros_like", "pdist", "cosh",
    }
)
_BOUNDED_BOTH = frozenset(
    {"tanh", "sigmoid", "sin", "cos", "erf", "softsign", "hardtanh", "cosine_similarity", "rand", "rand_like"}
)
_NONPOS_OPS = frozenset({"logsigmoid", "log_softmax"})
_MAX_OPS = frozenset({"max", "amax", "logsumexp", "cummax"})
_EINOPS_MOVES = frozenset({"einops.rearrange", "einops.repeat", "einops.pack", "einops.unpack"})
_SELECTS_ELEMENTS = frozenset({"sort", "msort", "topk", "kthvalue", "median", "mode", "max", "min", "amax", "amin",
                               "cummax", "cummin"})
# torch_scatter's segment maxima: `x - scatter_max(x, index)[0][index]` is <= 0
_SCATTER_MAX = frozenset({"scatter_max", "scatter_logsumexp", "segment_max_csr", "segment_max_coo"})


_MAX_NAME = re.compile(r"(^|_)(max|maxes|amax|lse|logsumexp)(_|$)|^m?max|max$", re.IGNORECASE)
_LOGPROB_NAME = re.compile(r"^(log_?probs?|logp|log_?p_\w+|log_?likelihoods?)$", re.IGNORECASE)
_DECAY_NAME = re.compile(r"(^|_)decays?$", re.IGNORECASE)


def name_facts(name: str) -> Facts:
    """What a variable's name tells, where code shows nothing else: a running
    max / logsumexp (``max_``, ``row_max``, ``maxes``, ``lse``), or a
    log-probability or log-space decay (``log_probs``, ``logp``,
    ``cum_decay``), which is <= 0."""
    if _MAX_NAME.search(name):
        return frozenset({MAXLIKE})
    if _LOGPROB_NAME.match(name) or _DECAY_NAME.search(name):
        return frozenset({NONPOS, UPPER})
    return _NONE


def value_facts(
    ctx: Context, node: cst.BaseExpression, bindings: Optional[Any] = None, depth: int = 0
) -> Facts:
    """What can be proved about the sign/bounds of an expression's values."""
    if depth > 12:
        return _NONE
    value = number(node)
    if value is not None:
        facts = {UPPER, LOWER}
        if value >= 0:
            facts.add(NONNEG)
        if value <= 0:
            facts.add(NONPOS)
        return frozenset(facts)
    rec = lambda n: value_facts(ctx, n, bindings, depth + 1)  # noqa: E731
    if isinstance(node, cst.Name):
        if node.value.isupper() and len(node.value) > 1:
            return frozenset({UPPER, LOWER})  # a module constant
        facts = name_facts(node.value)
        bound = _bound_value(bindings, node)
        if bound is not None:
            facts = facts | rec(bound)
        return facts
    if isinstance(node, cst.Attribute):
        if node.attr.value == "values" and isinstance(node.value, cst.Call):
            return rec(node.value)  # x.max(dim).values
        qualified = ctx.resolve(node)
        if qualified is not None and qualified.startswith("math."):
            return frozenset({UPPER, LOWER, NONNEG})  # math.pi, math.e, math.inf excluded below
        assigned = getattr(bindings, "self_values", None)
        values = assigned(node) if assigned is not None else None
        if values:
            # ``self.coeff = -0.5 / step ** 2`` in ``__init__``: what every assignment shows
            out = rec(values[0])
            for v in values[1:]:
                out &= rec(v)
            return out
        return _NONE
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        inner = rec(node.expression)
        out = set()
        if NONNEG in inner:
            out |= {NONPOS, UPPER}
        if NONPOS in inner:
            out |= {NONNEG, LOWER}
        if LOWER in inner:
            out.add(UPPER)
        if UPPER in inner:
            out.add(LOWER)
        return frozenset(out)
    if isinstance(node, cst.BinaryOperation):
        return _binary_facts(ctx, node, rec, bindings)
    if isinstance(node, cst.Subscript):
        # x.max(dim)[0] is the max values; indexing keeps a tensor's bounds
        base = node.value
        if isinstance(base, (cst.Call, cst.Subscript, cst.Name)):
            return rec(base)  # also scatter_max(x, index)[0][index], m[..., None]
        return _NONE
    if isinstance(node, cst.Call):
        qualified, method = ctx.callee(node)
        if qualified is not None and qualified.startswith("math."):
            facts = {UPPER, LOWER}
            first = node.args[0].value if node.args else None
            if qualified in ("math.sqrt", "math.exp") or (
                # the log of a literal >= 1, or of a config value (a period, a
                # base, a size), which is taken to be >= 1
                qualified in ("math.log", "math.log2", "math.log10")
                and first is not None
                and (number(first) is None or number(first) >= 1)
            ):
                facts.add(NONNEG)
            return frozenset(facts)
        call_facts = getattr(bindings, "call_facts", None)
        known = call_facts(node) if call_facts is not None else None
        if known:
            return known  # a helper or layer whose result the analysis knows
        if (qualified or "").rsplit(".", 1)[-1] in _SCATTER_MAX:
            return frozenset({MAXLIKE})
        if qualified in _EINOPS_MOVES and node.args and node.args[0].keyword is None:
            return rec(node.args[0].value)  # einops.rearrange/repeat move values, they never change one
        op = torch_op(ctx, node)
        if op is None:
            return _NONE
        if op in ("tensor", "as_tensor", "scalar_tensor") and not is_method_call(ctx, node):
            first = arg(node, 0, "data")
            return rec(first.value) if first is not None else _NONE
        out = set()
        if op in _NONNEG_OPS:
            out.add(NONNEG)
            out.add(LOWER)
        if op in _BOUNDED_BOTH:
            out |= {UPPER, LOWER}
        if op in _NONPOS_OPS:
            out |= {NONPOS, UPPER}
        if op in _MAX_OPS:
            out.add(MAXLIKE)
        if op in ("reciprocal", "reciprocal_"):
            # 1/x keeps x's sign: -0.5 * reciprocal(sigma ** 2) <= 0 (a Gaussian's exponent factor)
            operand = subject(ctx, node)
            if operand is not None:
                inner = rec(operand)
                if NONNEG in inner:
                    out |= {NONNEG, LOWER}
                if NONPOS in inner:
                    out |= {NONPOS, UPPER}
        if op in _SELECTS_ELEMENTS:
            # sorted, top-k, max or min values are elements of the input: its bounds hold
            operand = subject(ctx, node)
            if operand is not None:
                out |= rec(operand) & {NONNEG, NONPOS, UPPER, LOWER}
        if op in ("clamp", "clip", "clamp_", "clip_"):
            has_max = arg(node, None, "max") is not None or (
                arg(node, 1 if is_method_call(ctx, node) else 2) is not None
            )
            has_min = arg(node, None, "min") is not None or (
                arg(node, 0 if is_method_call(ctx, node) else 1) is not None
            )
            if has_max:
                out.add(UPPER)
            if has_min:
                out.add(LOWER)
        if op in ("clamp_max", "clamp_max_", "minimum", "fmin"):
            out.add(UPPER)
        if op in ("clamp_min", "maximum", "fmax"):
            out.add(LOWER)
        if op in ("maximum", "fmax") and not is_method_call(ctx, node) and any(
            MAXLIKE in rec(a.value) for a in node.args[:2]
        ):
            out.add(MAXLIKE)  # at least a running max: x - maximum(m, x.max()) <= 0
        if op == "min" and (len(node.args) >= (1 if is_method_call(ctx, node) else 2)):
            second = arg(node, 0 if is_method_call(ctx, node) else 1)
            if second is not None and number(second.value) is not None:
                out.add(UPPER)
        if op in ("pow", "float_power") and len(node.args) >= 1:
            exponent = arg(node, 0 if is_method_call(ctx, node) else 1, "exponent")
            if exponent is not None:
                e = number(exponent.value)
                if e is not None and e == int(e) and int(e) % 2 == 0:
                    out |= {NONNEG, LOWER}
        if op in ("sum", "mean", "cumsum", "nansum"):
            operand = subject(ctx, node)
            if operand is not None:
                out |= rec(operand) & {NONNEG, NONPOS}
                if NONPOS in out:
                    out.add(UPPER)
        if op in _PRODUCTS:
            operands = _product_operands(ctx, node, op)
            if len(operands) == 2:
                a, b = rec(operands[0]), rec(operands[1])
                if (NONNEG in a and NONPOS in b) or (NONPOS in a and NONNEG in b):
                    out |= {NONPOS, UPPER}  # sums of products of opposite signs
                elif (NONNEG in a and NONNEG in b) or (NONPOS in a and NONPOS in b):
                    out |= {NONNEG, LOWER}
        if op == "where" and not is_method_call(ctx, node) and len(node.args) == 3:
            cond, a, b = (x.value for x in node.args)
            fa, fb = rec(a), rec(b)
            out |= fa & fb & {NONNEG, NONPOS, UPPER, LOWER}  # what both branches are
            # `where(isneginf(m), 0, m)` for m = s.amax(...): where m is -inf the whole
            # row of s is -inf, so `s - 0` is -inf there and `s - m <= 0` still holds;
            # the 0 must be what the non-finite case takes, the max what the rest keeps
            if MAXLIKE in fb and (number(a) is not None or _zeros(ctx, a)) and _tests_nonfinite(ctx, cond, b):
                out.add(MAXLIKE)
        if op in ("uniform_", "uniform", "rand", "rand_like") and is_method_call(ctx, node) and node.args:
            out |= {UPPER, LOWER}  # uniform_(a, b) draws from [a, b]
        if op in ("to", "float", "half", "double", "type_as", "detach", "contiguous", "squeeze", "unsqueeze", "view", "reshape", "transpose", "permute", "flatten", "expand", "expand_as", "clone") and is_method_call(ctx, node):
            out |= rec(node.func.value)  # type: ignore[union-attr]
        return frozenset(out)
    return _NONE


#: products (and sums of products) of two tensors: their sign is the sign rule's
_PRODUCTS = frozenset({"einsum", "mul", "multiply", "matmul", "mm", "bmm", "outer"})


def _zeros(ctx: Context, node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Call) and torch_op(ctx, node) in ("zeros_like", "zeros", "new_zeros")


def _tests_nonfinite(ctx: Context, cond: cst.BaseExpression, value: cst.BaseExpression) -> bool:
    """``isneginf(m)``, ``isinf(m)``, ``~isfinite(m)``, ``m == -inf``: a test
    that holds where ``value`` is not finite (and maybe elsewhere never)."""
    text = ctx.code(value).strip()
    if isinstance(cond, cst.UnaryOperation) and isinstance(cond.operator, (cst.BitInvert, cst.Not)):
        inner = cond.expression
        return (isinstance(inner, cst.Call) and torch_op(ctx, inner) == "isfinite"
                and _operand_text(ctx, inner) == text)
    if isinstance(cond, cst.Call) and torch_op(ctx, cond) in ("isneginf", "isinf"):
        return _operand_text(ctx, cond) == text
    if isinstance(cond, cst.Comparison) and len(cond.comparisons) == 1 and isinstance(
            cond.comparisons[0].operator, cst.Equal):
        right = number(cond.comparisons[0].comparator)
        return right is not None and right == -math.inf and ctx.code(cond.left).strip() == text
    return False


def _operand_text(ctx: Context, call: cst.Call) -> Optional[str]:
    operand = subject(ctx, call)
    return ctx.code(operand).strip() if operand is not None else None


def _product_operands(ctx: Context, node: cst.Call, op: str) -> List[cst.BaseExpression]:
    """The two factors of ``torch.einsum("bd,dn->bdn", a, b)``, ``a.mul(b)``,
    ``torch.matmul(a, b)``; empty when there are not exactly two."""
    if op == "einsum":
        rest = [a.value for a in node.args[1:] if a.keyword is None and a.star == ""]
        if len(rest) == 1 and isinstance(rest[0], (cst.List, cst.Tuple)):
            rest = [e.value for e in rest[0].elements]
        return rest
    if is_method_call(ctx, node):
        other = arg(node, 0, "other")
        return [node.func.value, other.value] if other is not None else []  # type: ignore[union-attr]
    return [a.value for a in node.args[:2] if a.keyword is None] if len(node.args) == 2 else []


def _binary_facts(ctx: Context, node: cst.BinaryOperation, rec, bindings=None) -> Facts:
    op = node.operator
    left, right = rec(node.left), rec(node.right)
    out = set()
    if isinstance(op, cst.Power):
        e = number(node.right)
        if e is not None and e == int(e) and int(e) % 2 == 0:
            out |= {NONNEG, LOWER}
        if NONNEG in left:
            out.add(NONNEG)
        return frozenset(out)
    if isinstance(op, (cst.Multiply, cst.Divide, cst.FloorDivide)):
        # In scalar arithmetic such as `-math.log(10000.0) / dim`, a bare name
        # next to a proven-signed factor is taken to be a positive size.
        if not left and (NONNEG in right or NONPOS in right):
            left = _assumed_scalar_sign(node.left)
        if not right and (NONNEG in left or NONPOS in left):
            right = _assumed_scalar_sign(node.right)
        if (NONNEG in left and NONNEG in right) or (NONPOS in left and NONPOS in right):
            out.add(NONNEG)
        if (NONNEG in left and NONPOS in right) or (NONPOS in left and NONNEG in right):
            out.add(NONPOS)
        if isinstance(op, cst.Multiply) and UPPER in left and LOWER in left and UPPER in right and LOWER in right:
            out |= {UPPER, LOWER}
        if NONPOS in out:
            out.add(UPPER)
        if NONNEG in out:
            out.add(LOWER)
        return frozenset(out)
    if isinstance(op, cst.Add):
        if NONNEG in left and NONNEG in right:
            out |= {NONNEG, LOWER}
        if NONPOS in left and NONPOS in right:
            out |= {NONPOS, UPPER}
        if UPPER in left and UPPER in right:
            out.add(UPPER)
        if LOWER in left and LOWER in right:
            out.add(LOWER)
        return frozenset(out)
    if isinstance(op, cst.Subtract):
        if MAXLIKE in right or _operand_of_maximum(ctx, node.left, node.right, bindings):
            out |= {NONPOS, UPPER}
        if NONPOS in left and NONNEG in right:
            out |= {NONPOS, UPPER}
        if NONNEG in left and NONPOS in right:
            out |= {NONNEG, LOWER}
        if UPPER in left and LOWER in right:
            out.add(UPPER)
        if LOWER in left and UPPER in right:
            out.add(LOWER)
        return frozenset(out)
    return frozenset(out)


def _operand_of_maximum(ctx: Context, left: cst.BaseExpression, right: cst.BaseExpression, bindings) -> bool:
    """``a - maximum(a, b)`` (also through a name: ``p = torch.maximum(pp, ww)``
    then ``pp - p``): a value minus an elementwise maximum it takes part in is
    at most 0 -- RWKV's log-space running state ``exp(pp - p)``, ``exp(ww - p)``."""
    if type(right) is cst.Name:
        right = _bound_value(bindings, right) or right
    if type(right) is not cst.Call or len(right.args) != 2 or any(a.keyword or a.star for a in right.args):
        return False
    op = torch_op(ctx, right)
    if op in ("maximum", "fmax", "max") and not is_method_call(ctx, right):
        pass
    elif type(right.func) is cst.Name and right.func.value == "max" and ctx.resolve(right.func) is None:
        pass  # the builtin ``max(a, b)``
    else:
        return False
    spelled = ctx.code(left)
    return any(ctx.code(a.value) == spelled for a in right.args)


def _bound_value(bindings, node: cst.Name) -> Optional[cst.BaseExpression]:
    """The value a name is bound to at its use, as ``bindings`` tells it
    (``lookup_node`` where the adapter has it, else ``lookup`` by name), or None."""
    if bindings is None:
        return None
    lookup_node = getattr(bindings, "lookup_node", None)
    bound = lookup_node(node) if lookup_node is not None else bindings.lookup(node.value)
    return bound if bound is not None and bound is not node else None


def _assumed_scalar_sign(node: cst.BaseExpression) -> Facts:
    if _scalar_like(node):
        return frozenset({NONNEG})
    if (
        isinstance(node, cst.UnaryOperation)
        and isinstance(node.operator, cst.Minus)
        and _scalar_like(node.expression)
    ):
        return frozenset({NONPOS})
    return _NONE


def _scalar_like(node: cst.BaseExpression) -> bool:
    """A bare name/attribute or scalar arithmetic of them (``dim``, ``self.d - 1``)."""
    if isinstance(node, (cst.Name, cst.Attribute)):
        return True
    if isinstance(node, cst.BinaryOperation) and isinstance(
        node.operator, (cst.Add, cst.Multiply, cst.Subtract)
    ):
        return all(_scalar_like(n) or number(n) is not None for n in (node.left, node.right))
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value in ("float", "int"):
        return True
    return False


def bounded_above(ctx: Context, node: cst.BaseExpression, bindings: Optional[Any] = None) -> bool:
    facts = value_facts(ctx, node, bindings)
    return UPPER in facts or NONPOS in facts
