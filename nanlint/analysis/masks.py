"""Mask facts: which rows a fill can blank, and where a filled tensor goes.

A ``-inf`` fill is a NaN hazard only where a softmax-like consumer sees a row
whose every entry is filled. These queries answer the two halves of that:

- ``keeps_diagonal(mask, fill_when)``: a structural (causal, triangular,
  index-grid) mask whose fill never reaches the diagonal, so every row keeps a
  finite entry (``triu(ones, 1)``, ``tril(ones) == 0``, a ``self.bias``
  buffer registered as ``tril(ones)``, ``where(i <= j, 0, -inf)`` over
  ``arange``/``meshgrid`` grids);
- ``keeps_top_entry(mask, fill_when)``: a top-k / top-p / min-p filter, which
  never removes a row's largest entry (``x < topk(x)[0][..., -1:]``,
  ``probs < min_p * probs.amax()``, a mask with an entry reset to False or
  shifted right by ``pad(..., value=False)``);
- ``partial_index(target)``: an index assignment that reaches only some
  columns of each row (``x[:, eos] = -inf``, ``x[:, :k] = -inf``,
  ``x[1:][m] = -inf``);
- ``triangle_fill_diagonal(call)``: for ``triu``/``tril`` of a tensor filled
  with ``-inf``, whether the diagonal is filled (then the first or last row is
  entirely ``-inf``); an offset ``start_pos + 1`` (a position plus a positive
  literal, as in a causal mask over a key-value cache) keeps it out of ``triu``;
- ``only_selected(expr)`` / ``later_reads_only_selected(name, stmt)``: the
  filled value is only ever selected from (``max``, ``topk``, ``sort``...) or
  exponentiated, where ``-inf`` is exactly what is meant;
- ``is_mask_factor(node)``: the other factor of an additive-mask product
  (``(1 - mask) * -1e9``), shared by the rules that must not both report it.

Every query errs towards "unknown" (False / None): a fill whose mask is not
understood is treated as one that can blank a row.
"""

from __future__ import annotations

from typing import List, Optional

import libcst as cst

from ..engine import iter_tree, subtree
from ..patterns import METADATA, arg, is_method_call, number, subject, torch_op
from .values import HOST, INTEGER

#: consumers for which a -inf entry is what is meant: it is never selected, and exp(-inf) = 0
SELECTIONS = frozenset({
    "max", "amax", "argmax", "min", "amin", "argmin", "topk", "sort", "argsort", "kthvalue",
    "cummax", "cummin", "exp", "exp_",
})
#: selections by order alone: a sentinel that rounds to inf sorts the same
ORDERINGS = SELECTIONS - {"exp", "exp_"}
FILL_OPS = frozenset({"masked_fill", "masked_fill_"})
# methods that keep a tensor's values (and dtype): a fill flows through them unchanged
PURE_METHODS = frozenset({
    "masked_fill", "masked_fill_", "view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as",
    "flatten", "permute", "transpose", "contiguous", "clone", "detach", "repeat", "tril", "triu",
    "float", "half", "bfloat16", "to", "type_as", "t", "mT",
})
# ops that keep which entries of a mask are set (and where they are)
_SAME_PATTERN = frozenset({
    "bool", "to", "type", "type_as", "view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as",
    "contiguous", "clone", "detach", "float", "half", "long", "int", "byte", "flatten", "repeat",
})
_INVERT = frozenset({"logical_not", "bitwise_not"})
_ONES = frozenset({"ones", "ones_like", "new_ones"})
_FULLS = frozenset({"full", "full_like", "new_full"})
# reductions a top-k/top-p threshold is taken from: the row's top entry stays at or above it
_TOP_REDUCTIONS = frozenset({"topk", "kthvalue", "sort", "max", "amax", "quantile", "nanquantile"})
_GRID_OPS = frozenset({"arange", "meshgrid"})
_GRID_KEEP = frozenset({
    "unsqueeze", "view", "reshape", "expand", "expand_as", "repeat", "repeat_interleave", "to", "long",
    "int", "float", "t", "contiguous", "flatten",
})


def definition(facts, node: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """The value a name or ``self.<attr>`` holds where it is read: the nearest
    assignment (also of a tuple unpacking: the whole right-hand side), a
    parameter's default, the single ``self.<attr> = v`` of the class, or a
    buffer registered as ``self.register_buffer("<attr>", v)``."""
    if isinstance(node, cst.Name):
        for b in facts.scopes.reaching(node)[:1]:
            if b.kind in ("assign", "walrus", "param"):
                if b.value is None and isinstance(b.node, cst.Assign):
                    return b.node.value
                return b.value
        return None
    if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self":
        values = [v for _, v in facts.scopes.self_attribute(node)]
        if len(values) == 1:
            return values[0]
        if not values:
            return _registered_buffer(facts, node)
    return None


def _registered_buffer(facts, node: cst.Attribute) -> Optional[cst.BaseExpression]:
    cls = facts.scopes.enclosing_class(node)
    if cls is None:
        return None
    found: List[cst.BaseExpression] = []
    for n, _ in iter_tree(cls):
        if (
            isinstance(n, cst.Call)
            and isinstance(n.func, cst.Attribute)
            and n.func.attr.value == "register_buffer"
            and len(n.args) >= 2
            and isinstance(n.args[0].value, cst.SimpleString)
            and n.args[0].value.evaluated_value == node.attr.value
        ):
            found.append(n.args[1].value)
    return found[0] if len(found) == 1 else None


def _strip(facts, node: cst.BaseExpression, depth: int):
    """Follow a mask through names and value-keeping ops: (node, flipped)."""
    flipped = False
    for _ in range(12):
        if isinstance(node, (cst.Name, cst.Attribute)) and depth < 6:
            value = definition(facts, node)
            if value is None:
                return node, flipped
            node, depth = value, depth + 1
        elif isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.BitInvert, cst.Not)):
            node, flipped = node.expression, not flipped
        elif isinstance(node, cst.Subscript) and _prefix_view(node):
            node = node.value  # a leading block keeps the diagonal (`self.bias[:, :, :T, :T]`)
        elif isinstance(node, cst.Comparison) and len(node.comparisons) == 1:
            target = node.comparisons[0]
            value = number(target.comparator)
            if value is None and isinstance(target.comparator, cst.Name) and target.comparator.value in ("True", "False"):
                value = 1.0 if target.comparator.value == "True" else 0.0
            if value is None or value not in (0.0, 1.0):
                return node, flipped
            if isinstance(target.operator, cst.Equal):
                flipped ^= value == 0.0
            elif isinstance(target.operator, cst.NotEqual):
                flipped ^= value == 1.0
            else:
                return node, flipped
            node = node.left
        elif isinstance(node, cst.Call):
            op = torch_op(facts.ctx, node)
            if op in _INVERT:
                base = subject(facts.ctx, node)
                if base is None:
                    return node, flipped
                node, flipped = base, not flipped
            elif op in _SAME_PATTERN and is_method_call(facts.ctx, node):
                node = node.func.value  # type: ignore[union-attr]
            else:
                return node, flipped
        else:
            return node, flipped
    return node, flipped


# -- structural masks: the diagonal ---------------------------------------------------
def keeps_diagonal(facts, mask: cst.BaseExpression, fill_when: bool = True) -> bool:
    """Whether a fill applied where ``mask`` is ``fill_when`` never reaches the
    diagonal: every row keeps at least that entry."""
    value = diagonal_value(facts, mask)
    return value is not None and value != fill_when


def diagonal_value(facts, mask: cst.BaseExpression, depth: int = 0) -> Optional[bool]:
    """The truth value a structural mask has on its diagonal, or None."""
    if depth > 4:
        return None
    node, flipped = _strip(facts, mask, depth)
    value: Optional[bool] = None
    if isinstance(node, cst.Call):
        op = torch_op(facts.ctx, node)
        if op in ("triu", "tril", "triu_", "tril_"):
            base = subject(facts.ctx, node)
            if base is not None and _all_true(facts, base):
                value = triangle_fill_diagonal(facts, node)
    elif isinstance(node, cst.Comparison) and len(node.comparisons) == 1:
        left, right = _grid(facts, node.left), _grid(facts, node.comparisons[0].comparator)
        if left is not None and left == right:
            operator = node.comparisons[0].operator
            value = isinstance(operator, (cst.LessThanEqual, cst.GreaterThanEqual, cst.Equal))
            if not value and not isinstance(operator, (cst.LessThan, cst.GreaterThan, cst.NotEqual)):
                return None
    if value is None:
        return None
    return value != flipped


def _prefix_view(node: cst.Subscript) -> bool:
    """``m[:, :, :T, :T]``, ``i[:, None]``: new axes and leading blocks only, which
    keep entry (k, k) at (k, k) -- not ``m[0]`` or ``i[1:]``."""
    for element in node.slice:
        s = element.slice
        if isinstance(s, cst.Slice):
            if s.lower is not None or s.step is not None:
                return False
        elif not (isinstance(s, cst.Index) and (
            isinstance(s.value, cst.Ellipsis) or (isinstance(s.value, cst.Name) and s.value.value == "None")
        )):
            return False
    return True


def _integer(node: cst.BaseExpression) -> Optional[int]:
    value = number(node)
    if value is None and isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Subtract)):
        left, right = _integer(node.left), _integer(node.right)
        if left is not None and right is not None:
            value = left + right if isinstance(node.operator, cst.Add) else left - right
    return int(value) if value is not None and float(value).is_integer() else None


def _position_plus_one(node: cst.BaseExpression) -> bool:
    """``start_pos + 1``: a count or position plus a positive literal, the
    offset of a causal mask over a key-value cache. A position is never
    negative, so the offset is at least 1 and the diagonal stays out of the
    upper triangle. A subtraction or a negated term is not read so."""
    if not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add)):
        return False
    for step, term in ((node.right, node.left), (node.left, node.right)):
        k = _integer(step)
        if k is not None and k >= 1 and _integer(term) is None and _count(term):
            return True
    return False


def _count(node: cst.BaseExpression) -> bool:
    """A name, attribute, size or length: no sign, no subtraction."""
    if isinstance(node, (cst.Name, cst.Attribute)):
        return True
    if isinstance(node, cst.Subscript):
        return _count(node.value)
    if isinstance(node, cst.Call):
        return isinstance(node.func, cst.Name) and node.func.value == "len" or (
            isinstance(node.func, cst.Attribute) and node.func.attr.value in ("size", "numel", "dim"))
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Multiply)):
        return _count(node.left) and _count(node.right) or (
            _integer(node.left) is not None and _integer(node.left) >= 0 and _count(node.right)) or (
            _integer(node.right) is not None and _integer(node.right) >= 0 and _count(node.left))
    return False


def _all_true(facts, node: cst.BaseExpression, depth: int = 0) -> bool:
    """``torch.ones(...)``, ``x.new_ones(...)``, ``torch.full(..., True)`` (possibly cast)."""
    node, flipped = _strip(facts, node, depth)
    if flipped or not isinstance(node, cst.Call):
        return False
    op = torch_op(facts.ctx, node)
    if op in _ONES:
        return True
    if op in _FULLS:
        value = arg(node, 1, "fill_value")
        if value is not None and isinstance(value.value, cst.Name):
            return value.value.value == "True"
        return value is not None and number(value.value) not in (None, 0.0)
    return False


def _grid(facts, node: cst.BaseExpression, depth: int = 0) -> Optional[str]:
    """The index grid an expression ranges over (the source of its ``arange`` or
    ``meshgrid``), so that two grids compare equal on their diagonal."""
    if depth > 8:
        return None
    if isinstance(node, cst.Subscript):
        return _grid(facts, node.value, depth + 1) if _prefix_view(node) else None
    if isinstance(node, cst.Name):
        value = definition(facts, node)
        return _grid(facts, value, depth + 1) if value is not None else None
    if isinstance(node, cst.Call):
        op = torch_op(facts.ctx, node)
        if op == "arange" and not is_method_call(facts.ctx, node):
            return facts.ctx.code(node).strip()
        if op == "meshgrid":
            grids = {_grid(facts, a.value, depth + 1) or facts.ctx.code(a.value).strip()
                     for a in node.args if a.keyword is None}
            return grids.pop() if len(grids) == 1 else None
        if op in _GRID_KEEP:
            base = subject(facts.ctx, node)
            return _grid(facts, base, depth + 1) if base is not None else None
    return None


def triangle_fill_diagonal(facts, call: cst.Call) -> Optional[bool]:
    """For ``triu``/``tril``: whether the kept triangle includes the diagonal
    (for a tensor filled with -inf, the first row of ``triu`` / the last of
    ``tril`` is then entirely filled); None when the offset is neither
    arithmetic on literals (``0 + 1``) nor, for ``triu``, a position plus a
    positive literal."""
    upper = (torch_op(facts.ctx, call) or "").startswith("triu")
    found = arg(call, 0 if is_method_call(facts.ctx, call) else 1, "diagonal")
    k = _integer(found.value) if found is not None else 0
    if k is None:
        return False if upper and _position_plus_one(found.value) else None  # type: ignore[union-attr]
    return k <= 0 if upper else k >= 0


# -- top-k / top-p filters ------------------------------------------------------------
def keeps_top_entry(facts, mask: cst.BaseExpression, fill_when: bool = True) -> bool:
    """Whether a fill applied where ``mask`` is ``fill_when`` keeps each row's
    top entry: a threshold taken from the row's own top values, or a mask with
    an entry reset to False."""
    return _keeps_top(facts, mask, fill_when, 0)


def _keeps_top(facts, mask: cst.BaseExpression, fill_when: bool, depth: int) -> bool:
    if depth > 6:
        return False
    if fill_when and _has_kept_entry(facts, mask):
        return True
    if isinstance(mask, cst.Name):
        value = definition(facts, mask)
        return value is not None and _keeps_top(facts, value, fill_when, depth + 1)
    if isinstance(mask, cst.UnaryOperation) and isinstance(mask.operator, (cst.BitInvert, cst.Not)):
        return _keeps_top(facts, mask.expression, not fill_when, depth + 1)
    if isinstance(mask, cst.Call):
        op = torch_op(facts.ctx, mask)
        if op in ("scatter", "gather", "scatter_") or op in _SAME_PATTERN:
            base = subject(facts.ctx, mask)
            # `sorted_mask.scatter(1, sorted_indices, sorted_mask)`: the same entries, unsorted
            return base is not None and _keeps_top(facts, base, fill_when, depth + 1)
        if op == "pad" and fill_when:
            value = arg(mask, None, "value")
            return value is not None and _falsy(value.value)
        return False
    if isinstance(mask, cst.Comparison) and len(mask.comparisons) == 1:
        operator = mask.comparisons[0].operator
        left, right = mask.left, mask.comparisons[0].comparator
        # fill where x < t (or t > x): entries below a threshold go, the top stays
        if fill_when and isinstance(operator, cst.LessThan):
            return _threshold_from(facts, right, left)
        if fill_when and isinstance(operator, cst.GreaterThan):
            return _threshold_from(facts, left, right)
        # keep where x >= t
        if not fill_when and isinstance(operator, cst.GreaterThanEqual):
            return _threshold_from(facts, right, left)
        if not fill_when and isinstance(operator, cst.LessThanEqual):
            return _threshold_from(facts, left, right)
    return False


def _threshold_from(facts, threshold: cst.BaseExpression, x: cst.BaseExpression, depth: int = 0) -> bool:
    """Whether ``threshold`` is computed from a top reduction of ``x`` itself
    (``topk(x, k)[0][..., -1:]``, ``x.amax(-1) * min_p``)."""
    if depth > 4:
        return False
    source = facts.ctx.code(x).strip()
    for n in subtree(threshold):
        if isinstance(n, cst.Call) and torch_op(facts.ctx, n) in _TOP_REDUCTIONS:
            base = subject(facts.ctx, n)
            if base is not None and facts.ctx.code(base).strip() == source:
                return True
        if isinstance(n, cst.Name):
            value = definition(facts, n)
            if value is not None and _threshold_from(facts, value, x, depth + 1):
                return True
    return False


def _has_kept_entry(facts, mask: cst.BaseExpression) -> bool:
    """``mask[..., 0] = False`` / ``mask[..., -k:] = 0`` after the mask is made
    (in the same function): that entry of every row is never filled."""
    if not isinstance(mask, cst.Name):
        return False
    bindings = facts.scopes.reaching(mask)
    if not bindings:
        return False
    binding = bindings[0]
    for read in facts.scopes.reads_of(binding):
        up = facts.scopes.parent.get(read)
        if not (isinstance(up, cst.Subscript) and up.value is read):
            continue
        target = facts.scopes.parent.get(up)
        stmt = facts.scopes.parent.get(target)
        if (
            isinstance(target, cst.AssignTarget)
            and isinstance(stmt, cst.Assign)
            and _falsy(stmt.value)
            and facts.scopes.order[read] < facts.scopes.order.get(mask, 0)
        ):
            return True
    return False


def _falsy(node: cst.BaseExpression) -> bool:
    if isinstance(node, cst.Name):
        return node.value == "False"
    return number(node) == 0.0


# -- index assignments ---------------------------------------------------------------
def partial_index(facts, target: cst.Subscript) -> bool:
    """Whether ``target = fill`` reaches only some entries of each row: the
    last index is a position or a bounded slice (``x[:, eos]``, ``x[:, :k]``,
    ``x[..., 1:]``), or a bounded slice is taken before a mask (``x[1:][m]``)."""
    inner = target.value
    while isinstance(inner, cst.Subscript):
        if any(_bounded_slice(e.slice) for e in inner.slice):
            return True
        inner = inner.value
    if len(target.slice) < 2:
        return False  # `x[m]`: a mask over the whole tensor
    last = target.slice[-1].slice
    return _bounded_slice(last) or (isinstance(last, cst.Index) and _position(facts, last.value))


def _bounded_slice(s: cst.BaseSlice) -> bool:
    return isinstance(s, cst.Slice) and (s.lower is not None or s.upper is not None)


def _position(facts, node: cst.BaseExpression) -> bool:
    """An index that names positions rather than a mask: a number, ``self.eos``,
    ``eos + 1``, a list of token ids. Masks are told by how they are made (a
    comparison, ``~m``, a bool tensor) or, where nothing else decides, by a name
    containing ``mask``."""
    if isinstance(node, cst.Ellipsis):
        return False
    if number(node) is not None:
        return True
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        return _position(facts, node.expression)
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Subtract)):
        return _position(facts, node.left) or _position(facts, node.right)
    if isinstance(node, (cst.Name, cst.Attribute)):
        text = node.value if isinstance(node, cst.Name) else node.attr.value
        if "mask" in text.lower():
            return False
        if facts.dtype(node) == HOST:
            return True
        value = definition(facts, node)
        if value is not None:
            if isinstance(value, (cst.Comparison, cst.BooleanOperation)) or (
                isinstance(value, cst.UnaryOperation) and isinstance(value.operator, (cst.BitInvert, cst.Not))
            ):
                return False
            if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, (cst.BitAnd, cst.BitOr)):
                return False
        return True
    return isinstance(node, (cst.List, cst.Tuple))


# -- where a filled value goes -------------------------------------------------------
def only_selected(facts, expr: cst.CSTNode, depth: int = 0, selections: frozenset = SELECTIONS) -> bool:
    """Whether the value of ``expr`` is only ever selected from (``max``,
    ``topk``...) or exponentiated: directly, through value-keeping methods,
    through a name assigned in the same function, or through the return value
    of a function whose every call in the file is. ``selections`` narrows
    what counts (``ORDERINGS`` for a large positive sentinel, which ``exp``
    would overflow)."""
    if depth > 4:
        return False
    parent = facts.scopes.parent
    for _ in range(8):
        up = parent.get(expr)
        if isinstance(up, cst.Attribute) and up.value is expr:
            call = parent.get(up)
            if not (isinstance(call, cst.Call) and call.func is up):
                return False
        elif isinstance(up, cst.Arg) and up.keyword is None:
            call = parent.get(up)
            if not (isinstance(call, cst.Call) and call.args and call.args[0] is up):
                return False
            if is_method_call(facts.ctx, call):
                return False
        elif isinstance(up, cst.Assign) and up.value is expr:
            if len(up.targets) != 1 or not isinstance(up.targets[0].target, cst.Name):
                return False
            return _binding_selected(facts, up.targets[0].target.value, up, depth, selections)
        elif isinstance(up, cst.Return):
            return _calls_selected(facts, up, depth, selections)
        else:
            return False
        op = torch_op(facts.ctx, call)
        if op in selections:
            return True
        if op in PURE_METHODS:
            expr = call
            continue
        return False
    return False


def later_reads_only_selected(facts, name: cst.Name, stmt: cst.CSTNode) -> bool:
    """After ``stmt`` fills ``name`` in place (``name[m] = -inf``,
    ``name.masked_fill_(m, -inf)``), every later read of it is a selection."""
    bindings = facts.scopes.reaching(name)
    if not bindings:
        return False
    return _reads_selected(facts, bindings[0], facts.scopes.order[stmt], stmt, 0)


def _binding_selected(facts, name: str, assign: cst.Assign, depth: int, selections: frozenset = SELECTIONS) -> bool:
    scope = facts.scopes.scope_of.get(assign)
    for b in facts.scopes.bindings.get(scope, {}).get(name, []):
        if b.node is assign:
            return _reads_selected(facts, b, b.order, assign, depth, selections)
    return False


def _reads_selected(facts, binding, after: int, stmt: cst.CSTNode, depth: int,
                    selections: frozenset = SELECTIONS) -> bool:
    scopes = facts.scopes
    scope = scopes.scope_of.get(binding.node)
    if _captured(facts, scope, binding.name):
        return False
    uses = 0
    for read in scopes.reads_of(binding, scope):
        if scopes.order[read] <= after or any(a is stmt for a in scopes.ancestors(read)):
            continue
        up = scopes.parent.get(read)
        if isinstance(up, cst.Attribute) and up.attr.value in METADATA:
            continue  # s.shape, s.size(0): no values read
        uses += 1
        if not only_selected(facts, read, depth + 1, selections):
            return False
    return uses > 0


def _captured(facts, scope: cst.CSTNode, name: str) -> bool:
    """A nested function or lambda of ``scope`` reads ``name``: it cannot be followed."""
    for node in subtree(scope):
        if node is not scope and isinstance(node, (cst.FunctionDef, cst.Lambda)):
            if any(isinstance(n, cst.Name) and n.value == name for n in subtree(node)):
                return True
    return False


def _calls_selected(facts, ret: cst.Return, depth: int, selections: frozenset = SELECTIONS) -> bool:
    func = facts.scopes.enclosing_function(ret)
    if func is None:
        return False
    name = func.name.value
    calls = 0
    for node, _ in iter_tree(facts.ctx.module):
        if isinstance(node, cst.Call):
            callee = node.func
            if (isinstance(callee, cst.Name) and callee.value == name) or (
                isinstance(callee, cst.Attribute) and callee.attr.value == name
            ):
                calls += 1
                if not only_selected(facts, node, depth + 1, selections):
                    return False
    return calls > 0


#: consumers that normalise a row right here: with every row keeping a finite entry, no NaN
NORMALISERS = frozenset({"softmax", "log_softmax", "logsumexp", "scaled_dot_product_attention"})


def consumed_here(facts, call: Optional[cst.Call], filled: Optional[cst.BaseExpression],
                  statement: Optional[cst.CSTNode]) -> bool:
    """Whether the filled value goes only into a softmax-like normaliser or a
    selection in this function (nothing else can add a mask to it): the fill
    of ``call``, or -- for an in-place fill by ``statement`` -- the later reads
    of the name ``filled``."""
    ops: List[str] = []
    if statement is not None:
        if not isinstance(filled, cst.Name):
            return False
        bindings = facts.scopes.reaching(filled)
        if not bindings:
            return False
        binding = bindings[0]
        after = facts.scopes.order[statement]
        for read in facts.scopes.reads_of(binding):
            if facts.scopes.order[read] > after and not any(a is statement for a in facts.scopes.ancestors(read)):
                ops.extend(facts.consumers(read))
    elif call is not None:
        ops = facts.consumers(call)
    return bool(ops) and all(op in NORMALISERS or op in SELECTIONS for op in ops)


# -- products ------------------------------------------------------------------------
def is_mask_factor(facts, node: cst.BaseExpression, depth: int = 0, positive: bool = False) -> bool:
    """``mask``, ``attention_mask.float()``, ``(1 - mask)``, ``~keep``: the other
    factor of an additive-mask product (``(1 - mask) * -1e9``). NL003 reports
    those; NL108 leaves them to it. Where nothing else decides, a name
    containing ``mask`` says so."""
    if isinstance(node, cst.Name) and depth < 3:
        value = definition(facts, node)
        if value is not None and is_mask_factor(facts, value, depth + 1, positive):
            return True
    for n in subtree(node):
        if isinstance(n, cst.Name) and "mask" in n.value.lower():
            return True
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract):
        # ``(1 - m) * -1e9`` inverts a mask; times a positive coefficient
        # (``282744 * (1 - s)``, a spline's weight) only a 0/1 ``m`` makes it one
        return number(node.left) == 1.0 and (not positive or _zero_one(facts, node.right, depth))
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.BitInvert):
        return True
    return False


_CASTS = frozenset({"float", "half", "bfloat16", "double", "to", "type", "type_as", "long", "int", "bool"})


def _zero_one(facts, node: cst.BaseExpression, depth: int) -> bool:
    """A 0/1 tensor: a comparison, an integer or bool tensor, or a cast of one."""
    if depth > 4:
        return False
    if isinstance(node, cst.Comparison) or facts.dtype(node) == INTEGER:
        return True
    if isinstance(node, cst.Name):
        value = definition(facts, node)
        return value is not None and _zero_one(facts, value, depth + 1)
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in _CASTS:
        return _zero_one(facts, node.func.value, depth + 1)
    return False
