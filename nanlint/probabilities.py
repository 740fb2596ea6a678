"""Probability-valued expressions (softmax, sigmoid, 1 - p) and the locals they
flow through: shared by the rules about logs and softmaxes (NL101
log-of-softmax, NL102 unguarded-log, NL103 manual-softmax).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import libcst as cst

from .dtypes import DtypeFacts, fmt
from .finding import SAFE
from .patterns import arg, is_method_call, number, subject, torch_op
from .resolve import dotted_name
from .rule import Context

# Measured with torch 2.13 on CPU: the logit gap below the row max from which
# softmax is exactly 0, the x below which sigmoid(x) is exactly 0, and the x
# above which 1 - sigmoid(x) is exactly 0 (sigmoid rounds to 1).
UNDERFLOW: Dict[str, Tuple[float, float, float]] = {
    "float16": (17.34, -17.34, 8.32),
    "bfloat16": (92.75, -88.75, 6.24),
}
FLOAT32_UNDERFLOW = (103.98, -88.73, 16.64)

SOFTMAX_OPS = frozenset({"softmax"})
SIGMOID_OPS = frozenset({"sigmoid", "expit"})
SOFTMAX_MODULES = frozenset({"torch.nn.Softmax", "torch.nn.modules.activation.Softmax"})
SIGMOID_MODULES = frozenset({"torch.nn.Sigmoid", "torch.nn.modules.activation.Sigmoid"})


def underflow(dtype: DtypeFacts) -> Tuple[float, float, float]:
    return UNDERFLOW.get(dtype.name, FLOAT32_UNDERFLOW)


# -- local values (shared with NL102) ------------------------------------------------


class LocalValues:
    """What each local name was last assigned in the current function, in
    source order, forgetting a name as soon as it is rebound in a way that
    cannot be followed (augmented/tuple assignment, loop target, item
    assignment, in-place method ``p.add_(...)``). Also remembers the
    ``self.<attr> = nn.Softmax(...)``/``nn.Sigmoid()`` modules of the class
    being read."""

    def __init__(self) -> None:
        self.scopes: List[Dict[str, Optional[cst.BaseExpression]]] = [{}]
        self.modules: List[Dict[str, str]] = [{}]
        #: per scope, the value a name had before a rebinding that reads it
        #: (``p = p / p.sum()`` after ``p = labels + 1e-4``)
        self.earlier: List[Dict[int, Optional[cst.BaseExpression]]] = [{}]

    def push_function(self, node: cst.FunctionDef) -> None:
        scope: Dict[str, Optional[cst.BaseExpression]] = {}
        for p in _params(node.params):
            scope[p] = None
        self.scopes.append(scope)
        self.earlier.append({})

    def pop_function(self) -> None:
        if len(self.scopes) > 1:
            self.scopes.pop()
            self.earlier.pop()

    def push_class(self) -> None:
        self.modules.append({})

    def pop_class(self) -> None:
        if len(self.modules) > 1:
            self.modules.pop()

    def forget(self, name: str) -> None:
        self.scopes[-1][name] = None

    def assign(self, ctx, node: cst.Assign) -> None:
        single = len(node.targets) == 1
        for target in node.targets:
            t = target.target
            if isinstance(t, cst.Name):
                if single and t.value in self.scopes[-1]:
                    self.earlier[-1][id(node.value)] = self.scopes[-1][t.value]
                self.scopes[-1][t.value] = node.value if single else None
            elif isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self":
                kind = _module_kind(ctx, node.value)
                if kind is not None:
                    self.modules[-1][t.attr.value] = kind
                else:
                    self.modules[-1].pop(t.attr.value, None)
            else:
                for name in _target_names(t):
                    self.forget(name)

    def ann_assign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.target, cst.Name):
            self.scopes[-1][node.target.value] = node.value

    def aug_assign(self, node: cst.AugAssign) -> None:
        for name in _target_names(node.target):
            self.forget(name)

    def loop(self, target: cst.BaseExpression) -> None:
        for name in _target_names(target):
            self.forget(name)

    def call(self, node: cst.Call) -> None:
        """``p.clamp_(...)``, ``p.add_(eps)``: the value of p is no longer what it was assigned."""
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value.endswith("_") and not func.attr.value.startswith("_"):
            base = func.value
            if isinstance(base, cst.Name) and base.value in self.scopes[-1]:
                # the name now stands for the in-place call: `p.clamp_(min=eps)` reads as a guard
                self.scopes[-1][base.value] = node

    def lookup(self, name: str) -> Optional[cst.BaseExpression]:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def before(self, value: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        """What a name held before it was rebound to ``value`` (its own reads
        inside ``value`` see that), or None."""
        for scope in reversed(self.earlier):
            if id(value) in scope:
                return scope[id(value)]
        return None

    def module(self, node: cst.BaseExpression) -> Optional[str]:
        """"softmax"/"sigmoid" for ``self.<attr>`` holding such a module."""
        if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self":
            return self.modules[-1].get(node.attr.value)
        return None


def _module_kind(ctx, value: cst.BaseExpression) -> Optional[str]:
    if isinstance(value, cst.Call):
        q = ctx.resolve(value.func)
        if q in SOFTMAX_MODULES:
            return "softmax"
        if q in SIGMOID_MODULES:
            return "sigmoid"
    return None


def _params(params: cst.Parameters) -> List[str]:
    out = [p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)]
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            out.append(star.name.value)
    return out


def _target_names(node: cst.CSTNode) -> List[str]:
    if isinstance(node, cst.Name):
        return [node.value]
    if isinstance(node, (cst.Tuple, cst.List)):
        out: List[str] = []
        for el in node.elements:
            out.extend(_target_names(el.value))
        return out
    if isinstance(node, cst.StarredElement):
        return _target_names(node.value)
    if isinstance(node, cst.Subscript):
        base = node.value
        while isinstance(base, (cst.Subscript, cst.Attribute)):
            base = base.value
        if isinstance(base, cst.Name):
            return [base.value]
    return []


class TracksLocals:
    """Mixin: keep a ``LocalValues`` up to date during the traversal."""

    values: LocalValues

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.values.push_function(node)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.values.pop_function()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.values.push_class()

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.values.pop_class()

    def leave_Assign(self, node: cst.Assign) -> None:
        self.values.assign(self.ctx, node)  # type: ignore[attr-defined]

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.values.ann_assign(node)

    def leave_AugAssign(self, node: cst.AugAssign) -> None:
        self.values.aug_assign(node)

    def visit_For(self, node: cst.For) -> None:
        self.values.loop(node.target)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self.values.loop(node.asname.name)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.values.loop(node.target)


# -- what a log of a probability looks like ----------------------------------------


def is_receiver_module(node: cst.BaseExpression) -> bool:
    """``self.softmax(x)``: a method of a module, not ``Tensor.softmax``."""
    return isinstance(node, cst.Name) and node.value in ("self", "cls")


def log_call_operand(ctx, call: cst.Call, ops: Sequence[str] = ("log",)) -> Optional[cst.BaseExpression]:
    """The operand of ``torch.log(p)`` / ``p.log()`` (ops: the accepted op names),
    or None when the call is not such a torch log."""
    op = torch_op(ctx, call)
    if op not in ops:
        return None
    if is_method_call(ctx, call):
        if call.args:
            return None
        receiver = call.func.value  # type: ignore[union-attr]
        if is_receiver_module(receiver):
            return None
        return receiver
    if len(call.args) != 1 or call.args[0].keyword is not None or call.args[0].star:
        return None
    return call.args[0].value


def prob_call(ctx, node: cst.BaseExpression, values: Optional[LocalValues] = None) -> Optional[str]:
    """"softmax"/"sigmoid" when node is a call of torch's softmax or sigmoid
    (or of a ``self.<attr>`` module holding ``nn.Softmax``/``nn.Sigmoid``)."""
    if not isinstance(node, cst.Call):
        return None
    op = torch_op(ctx, node)
    method = is_method_call(ctx, node)
    if method and is_receiver_module(node.func.value):  # type: ignore[union-attr]
        op = None
    if op in SOFTMAX_OPS:
        if method:
            # Tensor.softmax(dim, dtype=None): a dim, not a tensor (`self.model.softmax(h)` is a module's method)
            first = arg(node, 0, "dim")
            if first is None or not (number(first.value) is not None or isinstance(first.value, (cst.Name, cst.Attribute))):
                return None
        return "softmax"
    if op in SIGMOID_OPS:
        if method and node.args:
            return None
        if not method and (len(node.args) != 1 or node.args[0].keyword is not None):
            return None
        return "sigmoid"
    if values is not None and len(node.args) == 1:
        kind = values.module(node.func)
        if kind is not None:
            return kind
    return None


def is_one(node: cst.BaseExpression) -> bool:
    return number(node) == 1.0


@dataclass
class Match:
    kind: str  # "softmax", "sigmoid", "one_minus_sigmoid"
    prob: cst.Call  # the softmax/sigmoid call
    wrappers: List[cst.BaseExpression]  # subscripts, gathers, casts around the probability (outermost first)
    name: Optional[str]  # the local name the probability was reached through


# selections, casts and reshapes of a probability: log(softmax(x)[i]) is log_softmax(x)[i]
INDEX_METHODS = frozenset(
    {"gather", "index_select", "take_along_dim", "float", "double", "to", "view", "reshape", "squeeze",
     "unsqueeze", "detach", "contiguous", "flatten", "transpose", "permute", "clone", "type_as"}
)


def _strip_index(ctx, node: cst.BaseExpression) -> Tuple[cst.BaseExpression, List[cst.BaseExpression]]:
    """``p[idx]`` / ``p.gather(d, idx)`` / ``p.float()`` -> (p, the wrappers, outermost first)."""
    wrappers: List[cst.BaseExpression] = []
    for _ in range(6):
        if isinstance(node, cst.Subscript):
            wrappers.append(node)
            node = node.value
        elif (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value in INDEX_METHODS
            and is_method_call(ctx, node)
        ):
            wrappers.append(node)
            node = node.func.value
        else:
            break
    return node, wrappers


def classify(ctx, call: cst.Call, values: Optional[LocalValues] = None) -> Optional[Match]:
    """The NL101 pattern a log call is, if any: ``log(softmax(x))``,
    ``log(sigmoid(x))``, ``log(1 - sigmoid(x))``, also through an index/gather
    and through one local name assigned the probability."""
    operand = log_call_operand(ctx, call)
    if operand is None:
        return None
    # 1 - sigmoid(x)
    if isinstance(operand, cst.BinaryOperation) and isinstance(operand.operator, cst.Subtract) and is_one(operand.left):
        inner, name = _through_name(operand.right, values)
        if isinstance(inner, cst.Call) and prob_call(ctx, inner, values) == "sigmoid":
            return Match("one_minus_sigmoid", inner, [], name)
        return None
    base, wrappers = _strip_index(ctx, operand)
    inner, name = _through_name(base, values)
    if isinstance(inner, cst.Call):
        kind = prob_call(ctx, inner, values)
        if kind is not None:
            return Match(kind, inner, wrappers, name)
    return None


def _through_name(
    node: cst.BaseExpression, values: Optional[LocalValues]
) -> Tuple[Optional[cst.BaseExpression], Optional[str]]:
    if isinstance(node, cst.Name):
        if values is None:
            return None, None
        return values.lookup(node.value), node.value
    return node, None


