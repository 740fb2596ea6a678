from __future__ import annotations

import math
import re
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import libcst as cst

from nanlint.dtypes import FLOAT32_MAX, DtypeFacts, fmt
from nanlint.engine import subtree, children
from nanlint.finding import HIGH, MEDIUM, SAFE
from nanlint.patterns import arg, is_reference, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid
from nanlint.resolve import dotted_name

_BCE_FUNCTIONS = frozenset({"torch.nn.functional.binary_cross_entropy"})
_BCE_MODULES = frozenset({"torch.nn.BCELoss", "torch.nn.modules.loss.BCELoss", "torch.nn.modules.BCELoss"})
_SIGMOID_MODULES = frozenset({"torch.nn.Sigmoid", "torch.nn.modules.activation.Sigmoid", "torch.nn.modules.Sigmoid"})
_SIGMOID_OPS = frozenset({"sigmoid", "expit"})
# methods that commute with an elementwise sigmoid: BCE-with-logits of x.squeeze(1) is
# BCE of sigmoid(x).squeeze(1)
_SHAPE_METHODS = frozenset(
    {"squeeze", "unsqueeze", "view", "reshape", "flatten", "contiguous", "float", "double",
     "type_as", "view_as", "reshape_as", "permute", "transpose", "t"}
)
# float32 computes sigmoid through exp, which overflows above log(FLOAT32_MAX) = 88.72
_FLOAT32_EXP_OVERFLOW = math.log(FLOAT32_MAX)


def saturation(dtype: DtypeFacts) -> Tuple[float, float]:
    """(x above which sigmoid(x) rounds to exactly 1, x below which it is exactly 0).

    1 - sigmoid(x) ~ exp(-x) falls under half the spacing below 1 (eps / 4); exp(x)
    falls under the smallest subnormal's half, or exp(-x) overflows float32, where
    the op computes. Measured on torch 2.13 CPU: float16 8.317 / -17.336, bfloat16
    6.235 / -88.75."""
    return math.log(4 / dtype.eps), max(math.log(dtype.zero_below), -_FLOAT32_EXP_OVERFLOW)


class BceOnSigmoid(Rule):
    """
    ## What it does
    Flags binary cross-entropy computed on a sigmoid:
    `F.binary_cross_entropy(torch.sigmoid(x), y)`, `nn.BCELoss()(x.sigmoid(), y)`,
    a `BCELoss` bound to a name (`loss_fn = nn.BCELoss()`, module level or in
    the function) or to an attribute in the same class (`self.criterion =
    nn.BCELoss()`) and called on a sigmoid, and a probability computed first
    (`p = torch.sigmoid(logits)`) and passed to one of these later in the same
    function. Every spelling of the sigmoid counts (`torch.sigmoid`,
    `F.sigmoid`, `x.sigmoid()`, `torch.special.expit`, `nn.Sigmoid()(x)`, an
    `nn.Sigmoid()` bound to a local name or an attribute of the class), also
    followed by a shape change (`sigmoid(x).squeeze(-1)`, or `p = p.view(-1)`
    on the way). A loss or activation chosen by a condition counts for the
    configuration that picks BCE and the sigmoid (`nn.BCELoss() if n == 1 else
    nn.CrossEntropyLoss()`, an attribute set in either branch of an `if`). A clamped probability
    (`sigmoid(x).clamp(eps, 1 - eps)`) is left alone.

    ## Confidence
    **High**; **medium** in a project that runs in mixed precision (autocast,
    AMP) but casts no model to half: CUDA autocast refuses
    `binary_cross_entropy` (it raises), so such code runs the loss in
    float32, where the saturation starts at 16.64 and the backward is not
    NaN; only a model run in pure half, or CPU autocast, reaches the float16
    case. (In a project where nothing runs in reduced precision the float16
    case is medium too, as for every float16-only hazard.)

    ## Why is this bad?
    The sigmoid rounds to exactly 1 for every x >= 8.32 in float16 (6.24 in
    bfloat16, 16.64 in float32) and to exactly 0 for x <= -17.3 in float16.
    There `binary_cross_entropy` clamps its log at -100, so a confidently
    wrong prediction costs 100 whatever its logit, and its gradient is 0:
    the model cannot learn its way out (measured: `F.binary_cross_entropy(
    sigmoid(20), 0)` is 100 with gradient 0 in float32). In float16 on CPU the
    backward is even NaN at saturation, right or wrong (its `1e-12` guard is 0
    in float16), and CUDA autocast refuses `binary_cross_entropy` altogether.
    `binary_cross_entropy_with_logits` computes the same loss from the logits
    with the log-sum-exp trick: finite, exact (20 for a logit of 20) and with
    gradient sigmoid(x) - y. `nanlint confirm` reports a bce-saturated event
    where the probability is exactly 0 or 1.

    ## Example
    ```python
    loss = F.binary_cross_entropy(torch.sigmoid(logits), targets, reduction="sum")
    criterion = nn.BCELoss()
    loss = criterion(torch.sigmoid(logits), targets)
    ```

    ## Use instead
    ```python
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    criterion = nn.BCEWithLogitsLoss()
    loss = criterion(logits, targets)
    ```

    ## Fix safety
    Safe: the loss becomes `binary_cross_entropy_with_logits(x, ...)`
    (`nn.BCEWithLogitsLoss(...)`) of the sigmoid's argument, keeping every
    other argument (`weight`, `reduction` and the deprecated `size_average`/
    `reduce` have the same positions and meaning). The value is the same
    wherever the probability form is finite and unclamped; only the
    saturated region changes, to the exact loss and a nonzero gradient.
    The sigmoid's argument is still evaluated once. For a loss module bound
    to a name or attribute the fix is offered only when that module is used
    exactly once (this call), since the rewritten module takes logits. For a
    probability bound to a name (`p = torch.sigmoid(x)`) the fix passes `x`
    instead of `p` (leaving `p` for its other uses), offered only when `x`
    is a plain name or attribute not reassigned or modified in place since.
    There is no fix when the loss or the activation is one branch of a
    choice, or the probability was reshaped into a new name on the way: the
    rewrite would change the other configuration too.
    """

    code = "NL107"
    name = "bce-on-sigmoid"
    summary = "binary_cross_entropy of a sigmoid saturates (loss clamped at 100, zero gradient): use the logits form"
    fix_applicability = SAFE
    triggers = (re.compile(r"binary_cross_entropy\b|BCELoss"),)
    valid = [
        Valid("import torch.nn.functional as F\nloss = F.binary_cross_entropy_with_logits(logits, y)\n"),
        Valid("import torch.nn.functional as F\nloss = F.binary_cross_entropy(probs, y)\n"),
        Valid("import torch, torch.nn.functional as F\nloss = F.binary_cross_entropy(torch.sigmoid(x).clamp(1e-6, 1 - 1e-6), y)\n"),
        Valid("import torch\nfrom torch import nn\nloss = nn.BCELoss()(torch.softmax(x, -1)[:, 1], y)\n"),
        Valid(
            "import torch, torch.nn.functional as F\n"
            "def f(x, y):\n"
            "    p = torch.sigmoid(x)\n"
            "    p = p * mask\n"
            "    return F.binary_cross_entropy(p, y)\n"
        ),
        # look-alikes of the chosen modules below: a softmax or a tanh, whatever the name says
        Valid(
            "from torch import nn\n"
            "def fit(model, x, y, n):\n"
            "    loss_fct = nn.BCELoss() if n == 1 else nn.CrossEntropyLoss()\n"
            "    act = nn.Softmax(-1) if n == 1 else nn.Identity()\n"
            "    sigmoid = nn.Tanh()\n"
            "    return loss_fct(act(model(x)), y) + loss_fct(sigmoid(model(x)), y)\n"
        ),
    ]
    invalid = [
        Invalid(
            "import torch\nimport torch.nn.functional as F\n"
            "loss = F.binary_cross_entropy(torch.sigmoid(logits), y, weight=w, reduction='sum')\n",
            fixed="import torch\nimport torch.nn.functional as F\n"
            "loss = F.binary_cross_entropy_with_logits(logits, y, weight=w, reduction='sum')\n",
        ),
        Invalid(
            "import torch\nfrom torch import nn\nloss = nn.BCELoss(reduction='none')(self.head(h).sigmoid().squeeze(-1), y)\n",
            fixed="import torch\nfrom torch import nn\nloss = nn.BCEWithLogitsLoss(reduction='none')(self.head(h).squeeze(-1), y)\n",
        ),
        Invalid(
            "import torch\nfrom torch import nn\n"
            "def train(model, x, y):\n"
            "    criterion = nn.BCELoss()\n"
            "    return criterion(torch.sigmoid(model(x)), y)\n",
            fixed="import torch\nfrom torch import nn\n"
            "def train(model, x, y):\n"
            "    criterion = nn.BCEWithLogitsLoss()\n"
            "    return criterion(model(x), y)\n",
        ),
        Invalid(
            "import torch\nfrom torch.nn.functional import binary_cross_entropy\n"
            "def loss(logits, y):\n"
            "    probs = torch.sigmoid(logits)\n"
            "    acc = ((probs > 0.5) == y).float().mean()\n"
            "    return binary_cross_entropy(probs, y), acc\n",
            fixed="import torch\nfrom torch.nn.functional import binary_cross_entropy\n"
            "def loss(logits, y):\n"
            "    probs = torch.sigmoid(logits)\n"
            "    acc = ((probs > 0.5) == y).float().mean()\n"
            "    return torch.nn.functional.binary_cross_entropy_with_logits(logits, y), acc\n",
        ),
        Invalid(
            "import torch\nfrom torch import nn\n"
            "class Disc(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.loss = nn.BCELoss()\n"
            "    def forward(self, x, y):\n"
            "        return self.loss(torch.sigmoid(x), y)\n"
            "    def other(self, p, y):\n"
            "        return self.loss(p, y)\n",
        ),
        # a loss and an activation chosen by the number of labels: BCE on a sigmoid with one
        # label (no fix: the other configuration would change too)
        Invalid(
            "from torch import nn\n"
            "def fit(model, x, y, n, loss_fct=None):\n"
            "    if loss_fct is None:\n"
            "        loss_fct = nn.BCELoss() if n == 1 else nn.CrossEntropyLoss()\n"
            "    act = nn.Sigmoid() if n == 1 else nn.Identity()\n"
            "    logits = act(model(x))\n"
            "    if n == 1:\n"
            "        logits = logits.view(-1)\n"
            "    return loss_fct(logits, y)\n",
        ),
        # the loss set in either branch of an `if`, the sigmoid a local module
        Invalid(
            "from torch import nn\n"
            "class Classifier(nn.Module):\n"
            "    def __init__(self, multi_label):\n"
            "        super().__init__()\n"
            "        if multi_label:\n"
            "            self.loss_function = nn.BCELoss()\n"
            "        else:\n"
            "            self.loss_function = nn.CrossEntropyLoss()\n"
            "    def loss(self, scores, y):\n"
            "        sigmoid = nn.Sigmoid()\n"
            "        return self.loss_function(sigmoid(scores), y)\n",
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        # per function (index 0: module level): name -> (value, sequence number of the binding)
        self.scopes: List[Dict[str, Tuple[Optional[cst.BaseExpression], int]]] = [{}]
        # per function: name or attribute text -> sequence number of its last write
        self.writes: List[Dict[str, int]] = [{}]
        self.functions: List[cst.CSTNode] = []
        # per class: attribute -> the values of its `self.attr = ...` assignments
        self.classes: List[Dict[str, List[cst.BaseExpression]]] = []
        self.seq = 0
        self._counts: Optional[Dict[str, int]] = None
        # the sigmoid of the call being checked is one branch of a choice (no fix then)
        self._chosen = False

    # -- scopes ---------------------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        attrs: Dict[str, List[cst.BaseExpression]] = {}
        for n in subtree(node):
            if isinstance(n, cst.Assign):
                for t in n.targets:
                    name = _self_attr(t.target)
                    if name is not None:
                        attrs.setdefault(name, []).append(n.value)
        self.classes.append(attrs)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        params = node.params
        scope: Dict[str, Tuple[Optional[cst.BaseExpression], int]] = {}
        for p in (*params.posonly_params, *params.params, *params.kwonly_params):
            scope[p.name.value] = (None, self._tick())
        self.scopes.append(scope)
        self.writes.append({})
        self.functions.append(node)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.pop()
        self.writes.pop()
        self.functions.pop()

    def _tick(self) -> int:
        self.seq += 1
        return self.seq

    def leave_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._bind(target.target, node.value)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._bind(node.target, node.value)

    def leave_AugAssign(self, node: cst.AugAssign) -> None:
        self._bind(node.target, None)

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target, None)

    def _bind(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(element.value, None)
            return
        if isinstance(target, cst.StarredElement):
            self._bind(target.value, None)
            return
        text = dotted_name(target)
        if text is None:
            return
        stamp = self._tick()
        self.writes[-1][text] = stamp
        if isinstance(target, cst.Name):
            self.scopes[-1][text] = (value, stamp)

    def _lookup(self, name: str) -> Optional[Tuple[Optional[cst.BaseExpression], int]]:
        if name in self.scopes[-1]:
            return self.scopes[-1][name]
        return self.scopes[0].get(name)

    # -- detection ----------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        # in-place methods write their receiver (`p.clamp_(...)`, `x.mul_(2)`)
        if isinstance(func, cst.Attribute) and func.attr.value.endswith("_") and not func.attr.value.startswith("_"):
            text = dotted_name(func.value)
            if text is not None:
                self.writes[-1][text] = self._tick()
        loss = self._loss(node)
        if loss is None:
            return
        kind, module_call, via = loss
        first = arg(node, 0, "input")
        if first is None:
            return
        self._chosen = False
        prob = self._probability(first.value)
        if prob is None:
            return
        sigmoid, logits, through, bound_value = prob
        dtype = self.ctx.dtype
        one, zero = saturation(dtype)
        what = "`binary_cross_entropy`" if kind == "function" else f"`BCELoss`{f' (`{via}`)' if via else ''}"
        of = f"`{through}` (= sigmoid)" if through else "a sigmoid"
        message = (
            f"{what} of {of}: the probability is exactly 1 for logits >= {fmt(round(one, 2))} and exactly 0 "
            f"for logits <= {fmt(round(zero, 2))} in {dtype.name}, where the loss is clamped at 100 and its "
            f"gradient is 0{' (NaN in float16 on CPU)' if any(d.name == 'float16' for d in self.ctx.dtypes) else ''}; "
            f"use `binary_cross_entropy_with_logits` on the logits"
        )
        confidence = HIGH
        project = self.ctx.project
        if dtype.name == "float16" and project is not None and project.casts_to_half() is False \
                and project.reduced_precision() == "yes":
            # mixed precision only: CUDA autocast refuses binary_cross_entropy, so the loss runs in float32
            confidence = MEDIUM
            message += (" (CUDA autocast refuses `binary_cross_entropy` -- it raises -- and nothing in this "
                        "project casts a model to half: only a model run in pure half, or CPU autocast, "
                        "reaches this in float16)")
        self.report(node, message, self._fix(node, kind, module_call, via, sigmoid, logits, through, bound_value),
                    confidence=confidence, needs_half=dtype.name in ("float16", "bfloat16"))

    def _loss(self, call: cst.Call) -> Optional[Tuple[str, Optional[cst.Call], Optional[str]]]:
        """("function", None, None) for F.binary_cross_entropy; ("module", the BCELoss(...)
        constructor call, the name/attribute it is bound to or None)."""
        func = call.func
        qualified = self.ctx.resolve(func)
        if qualified in _BCE_FUNCTIONS:
            return "function", None, None
        if isinstance(func, cst.Call) and self.ctx.resolve(func.func) in _BCE_MODULES:
            return "module", func, None
        if isinstance(func, cst.Name) and qualified is None:
            bound = self._lookup(func.value)
            if bound is not None and bound[0] is not None:
                made = self._made_by(bound[0], _BCE_MODULES)
                if made is not None:
                    return "module", made if made is bound[0] else None, func.value
        attr = _self_attr(func)
        if attr is not None and self.classes:
            values = self.classes[-1].get(attr, [])
            made = next((m for m in (self._made_by(v, _BCE_MODULES) for v in values) if m is not None), None)
            if made is not None:
                return "module", made if len(values) == 1 and made is values[0] else None, f"self.{attr}"
        return None

    def _made_by(self, value: cst.BaseExpression, classes: FrozenSet[str]) -> Optional[cst.Call]:
        """The constructor call of one of ``classes`` that ``value`` is, or that
        one branch of it is (``nn.BCELoss() if n == 1 else nn.CrossEntropyLoss()``:
        the configuration with one label computes BCE)."""
        if isinstance(value, cst.IfExp):
            return self._made_by(value.body, classes) or self._made_by(value.orelse, classes)
        if isinstance(value, cst.Call) and self.ctx.resolve(value.func) in classes:
            return value
        return None

    def _probability(
        self, expr: cst.BaseExpression
    ) -> Optional[Tuple[cst.Call, cst.BaseExpression, Optional[str], Optional[cst.BaseExpression]]]:
        """(sigmoid call, its argument, the name the probability went through, that name's
        value) when expr is a sigmoid, possibly reshaped, directly or through a local name."""
        found = self._sigmoid_in(expr)
        if found is not None:
            return found[0], found[1], None, None
        read, first = expr, expr
        for hop in range(3):
            if not isinstance(read, cst.Name) or not self.functions:
                return None
            # the shared scopes: the nearest binding on this path (not one in the other branch of an `if`)
            scopes = self.ctx.facts.scopes
            bindings = [b for b in scopes.reaching(read) if not scopes.exclusive(b.node, read)][:1]
            if not bindings or bindings[0].kind not in ("assign", "walrus") or bindings[0].value is None:
                return None
            value = bindings[0].value
            if scopes.enclosing_function(bindings[0].node) is None or self._written_in_place(bindings[0], read):
                return None  # modified in place since (`p.clamp_(eps, 1 - eps)`)
            found = self._sigmoid_in(value)
            if found is not None:
                if hop:
                    self._chosen = True  # reshaped on the way (`p = p.view(-1)`): no fix to rewrite both
                return found[0], found[1], first.value, value  # type: ignore[attr-defined]
            read = _unshaped(value)  # `p = p.view(-1)`: the probability, reshaped
        return None

    def _written_in_place(self, binding, read: cst.Name) -> bool:
        """An in-place method (``p.clamp_(...)``) is called on the binding's value before ``read``."""
        scopes = self.ctx.facts.scopes
        until = scopes.order.get(read, 0)
        for r in scopes.reads_of(binding):
            if scopes.order.get(r, 0) >= until:
                continue
            up = scopes.parent.get(r)
            if (isinstance(up, cst.Attribute) and up.value is r and up.attr.value.endswith("_")
                    and not up.attr.value.startswith("_") and isinstance(scopes.parent.get(up), cst.Call)):
                return True
        return False

    def _sigmoid_in(self, expr: cst.BaseExpression) -> Optional[Tuple[cst.Call, cst.BaseExpression]]:
        node = expr
        for _ in range(8):
            if isinstance(node, cst.Subscript):
                node = node.value
                continue
            if (
                isinstance(node, cst.Call)
                and isinstance(node.func, cst.Attribute)
                and node.func.attr.value in _SHAPE_METHODS
                and self.ctx.resolve(node.func) is None
            ):
                node = node.func.value
                continue
            break
        if not isinstance(node, cst.Call):
            return None
        logits = self._sigmoid_argument(node)
        return (node, logits) if logits is not None else None

    def _sigmoid_argument(self, call: cst.Call) -> Optional[cst.BaseExpression]:
        func = call.func
        qualified = self.ctx.resolve(func)
        if qualified is not None:
            if torch_op(self.ctx, call) in _SIGMOID_OPS:
                return _only_argument(call)
            return None
        if isinstance(func, cst.Call) and self.ctx.resolve(func.func) in _SIGMOID_MODULES and not func.args:
            return _only_argument(call)  # nn.Sigmoid()(x)
        if isinstance(func, cst.Name):
            bound = self._lookup(func.value)
            made = self._made_by(bound[0], _SIGMOID_MODULES) if bound is not None and bound[0] is not None else None
            if made is not None:
                self._chosen = self._chosen or made is not bound[0]  # type: ignore[index]
                return _only_argument(call)  # sigmoid = nn.Sigmoid(); sigmoid(x)
        if isinstance(func, cst.Attribute):
            attr = _self_attr(func)
            if attr is not None and self.classes:
                values = self.classes[-1].get(attr, [])
                made = [m for m in (self._made_by(v, _SIGMOID_MODULES) for v in values) if m is not None]
                if made:
                    self._chosen = self._chosen or len(values) > 1 or made[0] is not values[0]
                    return _only_argument(call)  # self.sigmoid = nn.Sigmoid()
            if func.attr.value == "sigmoid" and not call.args and dotted_name(func.value) not in _NON_TORCH:
                if isinstance(func.value, cst.Name) and self.ctx.resolve(func.value) is not None:
                    return None
                return func.value  # x.sigmoid()
        return None

    # -- fix ------------------------------------------------------------------------------
    def _fix(self, call: cst.Call, kind: str, module_call: Optional[cst.Call], via: Optional[str],
             sigmoid: cst.Call, logits: cst.BaseExpression, through: Optional[str],
             bound_value: Optional[cst.BaseExpression]) -> Optional[FixSpec]:
        replace: List[Tuple[cst.CSTNode, str]] = []
        imports: Tuple[str, ...] = ()
        if self._chosen:
            return None  # the activation may be another one: dropping it changes that configuration
        # the loss
        if kind == "function":
            new, imports = self._renamed(call.func, "binary_cross_entropy_with_logits", "torch.nn.functional")
            replace.append((call.func, new))
        else:
            if module_call is None:
                return None  # the name may hold another loss too: renaming its constructor changes that one
            if via is not None and not self._used_once(via):
                return None
            new, imports = self._renamed(module_call.func, "BCEWithLogitsLoss", "torch.nn")
            replace.append((module_call.func, new))
        # the probability
        if through is None:
            text = self.ctx.code(logits).strip()
            if sigmoid is not _arg_value(call) and not _atomic(logits):
                text = f"({text})"
            replace.append((sigmoid, text))
        else:
            assert bound_value is not None
            if not is_reference(logits) or logits.lpar:
                return None
            text = self.ctx.code(logits).strip()
            tracked = self.scopes[-1].get(through)
            if tracked is None or tracked[0] is not bound_value:
                return None  # bound again on another path: no sequence to check the logits against
            writes = self.writes[-1]
            stamp = tracked[1]
            head = text.split(".")[0]
            if any(writes.get(t, 0) >= stamp for t in _prefixes(text)) or writes.get(head, 0) >= stamp:
                return None  # the logits changed since the probability was computed
            new_value = bound_value.deep_replace(sigmoid, logits)
            first = arg(call, 0, "input")
            assert first is not None
            replace.append((first.value, self.ctx.code(new_value).strip()))
        return FixSpec(
            SAFE,
            "Compute the loss from the logits with binary_cross_entropy_with_logits",
            replace=replace,
            imports=imports,
        )

    def _renamed(self, func: cst.BaseExpression, new_name: str, module: str) -> Tuple[str, Tuple[str, ...]]:
        if isinstance(func, cst.Attribute):
            return f"{self.ctx.code(func.value).strip()}.{new_name}", ()
        alias = self.ctx.names.alias_for(module)
        if alias is not None:
            return f"{alias}.{new_name}", ()
        return f"{self.ctx.torch_name()}{module[len('torch'):]}.{new_name}", ("torch",)

    def _used_once(self, via: str) -> bool:
        """The loss module bound to `via` (a name or `self.attr`) is read once in the file."""
        if self._counts is None:
            counts: Dict[str, int] = {}
            for n in subtree(self.ctx.module):
                if isinstance(n, cst.Name):
                    counts[n.value] = counts.get(n.value, 0) + 1
                elif isinstance(n, cst.Attribute):
                    key = "." + n.attr.value
                    counts[key] = counts.get(key, 0) + 1
            self._counts = counts
        if via.startswith("self."):
            return self._counts.get(via[4:], 0) == 2  # the assignment and this call
        return self._counts.get(via, 0) == 2


_NON_TORCH = frozenset({"np", "numpy", "math", "jax", "jnp", "tf", "scipy", "special"})


def _unshaped(node: cst.BaseExpression) -> cst.BaseExpression:
    """``p.view(-1).float()`` -> ``p``: the value before methods that only reshape or cast it."""
    while (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
           and node.func.attr.value in _SHAPE_METHODS):
        node = node.func.value
    return node


def _only_argument(call: cst.Call) -> Optional[cst.BaseExpression]:
    if len(call.args) != 1:
        return None
    a = call.args[0]
    if a.star or (a.keyword is not None and a.keyword.value != "input"):
        return None
    return a.value


def _arg_value(call: cst.Call) -> Optional[cst.BaseExpression]:
    first = arg(call, 0, "input")
    return first.value if first is not None else None


def _atomic(node: cst.BaseExpression) -> bool:
    return bool(node.lpar) or isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript))


def _self_attr(node: cst.BaseExpression) -> Optional[str]:
    if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self":
        return node.attr.value
    return None


def _prefixes(text: str) -> Iterator[str]:
    parts = text.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])
