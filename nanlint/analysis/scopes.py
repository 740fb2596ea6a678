"""Where names are bound, and which binding a use of a name sees.

Built lazily, once per file, from one walk over the tree the engine already
parsed (no libcst metadata providers: their cost is several parses). Rules do
not call this directly; they ask :class:`nanlint.analysis.values.Facts`.

The model is deliberately simple and errs towards "unknown":

- a *scope* is the module, a class body or a function (lambdas and
  comprehensions belong to the function around them);
- a use of a name inside a function sees the bindings of that function that
  come *before* it in source order (the last one first), else the function's
  parameter, else an enclosing function's binding, else a module binding;
- ``self.attr`` inside a method sees every ``self.attr = ...`` in the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import libcst as cst

from ..engine import iter_tree

SCOPE_NODES = (cst.Module, cst.ClassDef, cst.FunctionDef)
# Exact node types for the build's per-node tests: libcst's node classes are
# concrete and never subclassed, and an isinstance() test against them goes
# through ABCMeta (several times slower than a set lookup, on every node).
_SCOPE_TYPES = frozenset(SCOPE_NODES)
_BINDING_TYPES = frozenset({
    cst.Assign, cst.AnnAssign, cst.AugAssign, cst.Param, cst.For, cst.CompFor, cst.WithItem,
    cst.NamedExpr, cst.FunctionDef, cst.ClassDef, cst.Name,
})
_SEQUENCE_TYPES = frozenset({cst.Element, cst.StarredElement, cst.Tuple, cst.List})
_ELEMENT_TYPES = frozenset({cst.Element, cst.StarredElement})
_NEVER_READ_UNDER = frozenset({cst.FunctionDef, cst.ClassDef, cst.Param, cst.ImportAlias, cst.AsName})
_TARGET_OWNERS = frozenset({cst.AugAssign, cst.For, cst.CompFor, cst.NamedExpr})
# bindings made by a statement whose own value is read before the name is bound
_STATEMENT_KINDS = frozenset({"assign", "augassign", "walrus"})


@dataclass(frozen=True)
class Binding:
    """One place where a name gets a value."""

    name: str
    #: "assign", "augassign", "param", "for", "with", "def", "class", "import", "walrus"
    kind: str
    #: the node that binds (the Assign statement, the Param, the For...)
    node: cst.CSTNode
    #: the value expression where the source shows one (``x = <value>``, a
    #: parameter's default), else None
    value: Optional[cst.BaseExpression]
    #: source-order index of the binding node
    order: int
    #: for a parameter, its annotation (``x: float``)
    annotation: Optional[cst.BaseExpression] = None


class Scopes:
    """Parents, source order, and bindings per scope for one module."""

    def __init__(self, module: cst.Module, kids: Optional[Dict[cst.CSTNode, List[cst.CSTNode]]] = None) -> None:
        self.module = module
        #: node -> its children, filled by the build (the engine's traversal,
        #: still under way when a rule first asks, reads them instead of
        #: computing them again)
        self.kids: Dict[cst.CSTNode, List[cst.CSTNode]] = {} if kids is None else kids
        self.parent: Dict[cst.CSTNode, Optional[cst.CSTNode]] = {}
        self.order: Dict[cst.CSTNode, int] = {}
        #: scope node -> name -> bindings in source order
        self.bindings: Dict[cst.CSTNode, Dict[str, List[Binding]]] = {}
        #: class node -> attribute name -> values assigned to ``self.<name>``
        self.self_attrs: Dict[cst.CSTNode, Dict[str, List[Tuple[cst.CSTNode, Optional[cst.BaseExpression]]]]] = {}
        #: scope node -> Name nodes read in it (for uses / consumers)
        self.reads: Dict[cst.CSTNode, Dict[str, List[cst.Name]]] = {}
        self._build()

    # -- building ---------------------------------------------------------
    def _build(self) -> None:
        parent, order = self.parent, self.order
        scope_of: Dict[cst.CSTNode, cst.CSTNode] = {}
        self.scope_of = scope_of
        index = 0
        scope_types, binding_types = _SCOPE_TYPES, _BINDING_TYPES
        for node, up in iter_tree(self.module, self.kids):
            parent[node] = up
            order[node] = index
            index += 1
            if up is None:
                scope_of[node] = node
            else:
                s = scope_of[up]
                scope_of[node] = up if type(up) in scope_types and _inside_body(up, node) else s
            kind = type(node)
            if kind in scope_types:
                self.bindings.setdefault(node, {})
            if kind in binding_types:
                self._bind(node, up, scope_of)

    def _add(self, scope: cst.CSTNode, binding: Binding) -> None:
        self.bindings.setdefault(scope, {}).setdefault(binding.name, []).append(binding)

    def _bind(self, node: cst.CSTNode, up: Optional[cst.CSTNode], scope_of) -> None:
        kind = type(node)
        # names are most of the calls: test them first, by exact type
        if kind is cst.Name:
            if up is not None and _is_read(node, up) and not self._in_target(up):
                self.reads.setdefault(scope_of[node], {}).setdefault(node.value, []).append(node)
        elif kind is cst.Assign:
            scope = scope_of[node]
            for target in node.targets:
                self._bind_target(scope, target.target, node, node.value)
        elif kind is cst.AnnAssign:
            self._bind_target(scope_of[node], node.target, node, node.value)
        elif kind is cst.AugAssign:
            if type(node.target) is cst.Name:
                self._add(scope_of[node], Binding(node.target.value, "augassign", node, node, self.order[node]))
        elif kind is cst.Param:
            if type(up) is cst.Parameters:
                func = self.parent.get(up)
                if type(func) in (cst.FunctionDef, cst.Lambda):
                    owner = func if type(func) is cst.FunctionDef else scope_of[func]
                    annotation = node.annotation.annotation if node.annotation is not None else None
                    self._add(owner, Binding(node.name.value, "param", node,
                                             node.default, self.order[node], annotation))
        elif kind is cst.For or kind is cst.CompFor:
            for name in _names_in(node.target):
                self._add(scope_of[node], Binding(name.value, "for", node, node.iter, self.order[node]))
        elif kind is cst.WithItem:
            if node.asname is not None:
                for name in _names_in(node.asname.name):
                    self._add(scope_of[node], Binding(name.value, "with", node, node.item, self.order[node]))
        elif kind is cst.NamedExpr:
            if type(node.target) is cst.Name:
                self._add(scope_of[node], Binding(node.target.value, "walrus", node, node.value, self.order[node]))
        elif (kind is cst.FunctionDef or kind is cst.ClassDef) and up is not None:
            what = "def" if kind is cst.FunctionDef else "class"
            self._add(scope_of[up] if type(up) not in _SCOPE_TYPES else _owner(up, node, scope_of),
                      Binding(node.name.value, what, node, None, self.order[node]))

    def _in_target(self, up: cst.CSTNode) -> bool:
        """A name inside a tuple/list target (``a, b = ...``, ``for i, x in ...``)
        is bound there, not read."""
        child: cst.CSTNode = up
        node = up
        while type(node) in _SEQUENCE_TYPES:
            child, node = node, self.parent.get(node)
        if child is up and type(up) not in _ELEMENT_TYPES:
            return False
        if isinstance(node, cst.AssignTarget):
            return node.target is child
        if isinstance(node, (cst.For, cst.CompFor)):
            return node.target is child
        if isinstance(node, cst.AsName):
            return node.name is child
        return False

    def _bind_target(self, scope, target, stmt, value) -> None:
        if isinstance(target, cst.Name):
            self._add(scope, Binding(target.value, "assign", stmt, value, self.order[stmt]))
        elif isinstance(target, (cst.Tuple, cst.List)):
            parts = _unpacked(target, value)
            for element, part in zip(target.elements, parts):
                inner = element.value
                if isinstance(inner, cst.StarredElement):
                    inner = inner.value
                # a tuple unpacking: each name gets its element of the value where
                # the source shows it, else "part of" the value (unknown)
                self._bind_target(scope, inner, stmt, part)
        elif (
            isinstance(target, cst.Attribute)
            and isinstance(target.value, cst.Name)
            and target.value.value == "self"
        ):
            cls = self.enclosing_class(stmt)
            if cls is not None:
                self.self_attrs.setdefault(cls, {}).setdefault(target.attr.value, []).append((stmt, value))

    # -- queries ------------------------------------------------------------
    def ancestors(self, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
        up = self.parent.get(node)
        while up is not None:
            yield up
            up = self.parent.get(up)

    def enclosing_function(self, node: cst.CSTNode) -> Optional[cst.FunctionDef]:
        for up in self.ancestors(node):
            if isinstance(up, cst.FunctionDef):
                return up
        return None

    def enclosing_class(self, node: cst.CSTNode) -> Optional[cst.ClassDef]:
        for up in self.ancestors(node):
            if isinstance(up, cst.ClassDef):
                return up
        return None

    def statement_of(self, node: cst.CSTNode) -> Optional[cst.CSTNode]:
        """The small statement (``Assign``, ``Expr``, ``Return``...) holding ``node``."""
        for up in [node, *self.ancestors(node)]:
            if isinstance(up, cst.BaseSmallStatement) or isinstance(up, cst.BaseCompoundStatement):
                return up
        return None

    def reaching(self, name: cst.Name) -> List[Binding]:
        """The bindings a read of ``name`` may see, nearest first (see the
        module docstring). Empty when the name is bound nowhere in the file
        (a builtin, an import handled by ``Names``, a star import)."""
        where = self.order.get(name, 1 << 60)
        scope: Optional[cst.CSTNode] = self.scope_of.get(name)
        first = True
        while scope is not None:
            table = self.bindings.get(scope, {})
            found = table.get(name.value)
            if found:
                if isinstance(scope, cst.FunctionDef) and first:
                    # `x = f(x)`: the read inside the statement sees the binding before it
                    inside = set(self.ancestors(name))
                    before = [b for b in found if b.order < where
                              and not (b.kind in _STATEMENT_KINDS and b.node in inside)]
                    if before:
                        return list(reversed(before))
                    params = [b for b in found if b.kind == "param"]
                    if params:
                        return params
                    # bound later in the function only (a loop carries it back)
                    return list(reversed(found))
                if not isinstance(scope, cst.ClassDef) or first:
                    return list(reversed(found))
            first = False
            scope = self._outer_scope(scope)
        return []

    def _outer_scope(self, scope: cst.CSTNode) -> Optional[cst.CSTNode]:
        if isinstance(scope, cst.Module):
            return None
        up = self.scope_of.get(scope)
        # class bodies are not visible from the methods inside them
        while isinstance(up, cst.ClassDef):
            up = self.scope_of.get(up)
        return up

    def reads_of(self, binding: Binding, scope: Optional[cst.CSTNode] = None) -> List[cst.Name]:
        """Reads of the binding's name after it, in the scope it was bound in: not
        those in its own statement (``x = f(x)`` reads the binding before), and
        in a function not those after the name is bound again (but those in the
        value of that rebinding: ``x = x.view(...)`` reads this one)."""
        scope = scope if scope is not None else self.scope_of.get(binding.node)
        if scope is None:
            return []
        later = [b for b in self.bindings.get(scope, {}).get(binding.name, [])
                 if b.order > binding.order and b.kind in _STATEMENT_KINDS and not self.exclusive(binding.node, b.node)]
        until = min(later, key=lambda b: b.order) if later and isinstance(scope, cst.FunctionDef) else None
        out = []
        for n in self.reads.get(scope, {}).get(binding.name, []):
            if self.order[n] <= binding.order:
                continue
            if binding.kind in _STATEMENT_KINDS or until is not None:
                ups = set(self.ancestors(n))
                if binding.kind in _STATEMENT_KINDS and binding.node in ups:
                    continue
                if until is not None and self.order[n] > until.order and until.node not in ups:
                    continue
            out.append(n)
        return out

    def reads_of_statement(self, stmt: cst.CSTNode, name: str) -> List[cst.Name]:
        """The reads (see :meth:`reads_of`) of the binding that ``stmt`` makes
        for ``name``; empty when it makes none."""
        for b in self.bindings.get(self.scope_of.get(stmt), {}).get(name, []):
            if b.node is stmt:
                return self.reads_of(b)
        return []

    def assigned_value(self, name: cst.Name) -> Optional[cst.BaseExpression]:
        """The value of the nearest plain assignment (``x = v``, ``(x := v)``)
        a read of ``name`` sees, or None (a parameter, a loop variable...)."""
        for b in self.reaching(name)[:1]:
            if b.kind in ("assign", "walrus"):
                return b.value
        return None

    def exclusive(self, a: cst.CSTNode, b: cst.CSTNode) -> bool:
        """``a`` and ``b`` lie in different branches of one ``if`` (``body`` and
        ``else``/``elif``): a rebinding in the other branch does not end a
        binding's reads."""
        sides = self._if_sides(a)
        return any(sides.get(i, side) != side for i, side in self._if_sides(b).items())

    def _if_sides(self, node: cst.CSTNode) -> Dict[cst.CSTNode, str]:
        out: Dict[cst.CSTNode, str] = {}
        child = node
        for up in self.ancestors(node):
            if isinstance(up, cst.If):
                out[up] = "body" if child is up.body else "orelse" if child is up.orelse else "test"
            elif isinstance(up, SCOPE_NODES):
                break
            child = up
        return out

    def self_attribute(self, node: cst.Attribute) -> List[Tuple[cst.CSTNode, Optional[cst.BaseExpression]]]:
        """Every ``self.<attr> = value`` in the class around a ``self.<attr>`` read."""
        if not (isinstance(node.value, cst.Name) and node.value.value == "self"):
            return []
        cls = self.enclosing_class(node)
        if cls is None:
            return []
        return self.self_attrs.get(cls, {}).get(node.attr.value, [])

    def function_named(self, name: str, near: Optional[cst.CSTNode] = None) -> Optional[cst.FunctionDef]:
        """A function of this file called ``name`` (a method of the class
        around ``near`` first, then a module-level function)."""
        if near is not None:
            cls = self.enclosing_class(near)
            if cls is not None:
                for b in self.bindings.get(cls, {}).get(name, []):
                    if isinstance(b.node, cst.FunctionDef):
                        return b.node
        for b in self.bindings.get(self.module, {}).get(name, []):
            if isinstance(b.node, cst.FunctionDef):
                return b.node
        return None

    def returns(self, func: cst.FunctionDef) -> List[cst.BaseExpression]:
        """The expressions a function returns (not those of nested functions)."""
        out: List[cst.BaseExpression] = []
        for node, _ in iter_tree(func.body):
            if isinstance(node, cst.Return) and node.value is not None and self.enclosing_function(node) is func:
                out.append(node.value)
        return out


def _inside_body(scope: cst.CSTNode, child: cst.CSTNode) -> bool:
    """Whether ``child`` (a direct child of a scope node) belongs to the scope's
    own namespace: a function's parameters and body, a class's body -- not its
    decorators, bases or default values, which are evaluated outside."""
    if isinstance(scope, cst.Module):
        return True
    if isinstance(scope, cst.FunctionDef):
        return child is scope.body or child is scope.params
    if isinstance(scope, cst.ClassDef):
        return child is scope.body
    return False


def _owner(scope: cst.CSTNode, node: cst.CSTNode, scope_of) -> cst.CSTNode:
    return scope if _inside_body(scope, node) else scope_of[scope]


def _unpacked(target, value) -> List[Optional[cst.BaseExpression]]:
    """What each element of a tuple target is bound to: ``a, b = x, y`` pairs
    them; ``q, k = [t.float() for t in (q, k)]`` gives each the comprehension's
    element expression (its dtype does not depend on the item); else unknown."""
    n = len(target.elements)
    starred = any(isinstance(e.value, cst.StarredElement) for e in target.elements)
    if isinstance(value, (cst.Tuple, cst.List)) and not starred and len(value.elements) == n and not any(
        isinstance(e, cst.StarredElement) for e in value.elements
    ):
        return [e.value for e in value.elements]
    if isinstance(value, (cst.ListComp, cst.GeneratorExp)) and not starred:
        return [value.elt] * n
    if n == 2 and not starred and _values_and_indices(value):
        # ``m, _ = torch.max(x, dim)``: the values are what the call's value
        # facts describe (a max, sorted values); the indices stay unknown
        return [value, None]
    if not starred and isinstance(value, cst.Call):
        name = _call_name(value)
        args = [a for a in value.args if a.keyword is None]
        if name in _ONE_PER_INPUT and not any(a.star for a in args):
            if len(args) == 1 and isinstance(args[0].value, (cst.List, cst.Tuple)):
                # ``torch.meshgrid([xs, ys])``
                elements = args[0].value.elements
                if len(elements) == n and not any(isinstance(e, cst.StarredElement) for e in elements):
                    return [e.value for e in elements]
            elif len(args) == n and isinstance(value.func, cst.Attribute):
                # ``gy, gx = torch.meshgrid(ys, xs)``: each output spreads one input over the grid
                return [a.value for a in args]
        if name in _PIECES and isinstance(value.func, cst.Attribute):
            # ``q, k, v = qkv.chunk(3, -1)``: each piece holds values of the tensor cut
            return [value] * n
    return [None] * n


#: calls whose i-th output holds the values of their i-th input
_ONE_PER_INPUT = frozenset({"meshgrid", "broadcast_tensors"})
#: calls that cut a tensor into pieces (each the call's own values)
_PIECES = frozenset({"chunk", "split", "unbind", "tensor_split"})


def _call_name(call: cst.Call) -> str:
    func = call.func
    return func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""


#: reductions that return a (values, indices) pair when given a dim
VALUES_AND_INDICES = frozenset({"max", "min", "sort", "topk", "kthvalue", "median", "mode", "cummax", "cummin"})


def _values_and_indices(value) -> bool:
    if not isinstance(value, cst.Call) or not value.args:
        return False
    name = _call_name(value)
    if name not in VALUES_AND_INDICES:
        return False
    if isinstance(value.func, cst.Name) and name in ("max", "min"):
        return False  # the builtin max/min
    return True


def _names_in(target: cst.BaseExpression) -> List[cst.Name]:
    if isinstance(target, cst.Name):
        return [target]
    if isinstance(target, (cst.Tuple, cst.List)):
        out: List[cst.Name] = []
        for element in target.elements:
            value = element.value
            if isinstance(value, cst.StarredElement):
                value = value.value
            out.extend(_names_in(value))
        return out
    return []


def _is_read(name: cst.Name, up: cst.CSTNode) -> bool:
    """A Name node that reads a variable (not an attribute's name, a keyword,
    a binding target, a def's name)."""
    kind = type(up)
    if kind in _NEVER_READ_UNDER:
        return False
    if kind is cst.Attribute:
        return up.attr is not name
    if kind is cst.Arg:
        return up.keyword is not name
    if kind is cst.AssignTarget:
        return up.target is not name
    if kind is cst.AnnAssign:
        return up.target is not name
    if kind in _TARGET_OWNERS:  # augassign reads its target; for, comprehension, walrus bind it
        return kind is cst.AugAssign or up.target is not name
    return True
