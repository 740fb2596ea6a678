from __future__ import annotations

import re
from typing import Dict, List, Optional, Set

import libcst as cst

from nanlint.dtypes import fmt
from nanlint.engine import children
from nanlint.finding import HIGH, MEDIUM, UNSAFE
from nanlint.patterns import additive_terms, arg, look_through, is_method_call, is_reference, number, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid
from nanlint.probabilities import (
    LocalValues,
    TracksLocals,
    classify,
    is_one,
    log_call_operand,
    prob_call,
    underflow,
)

LOG_OPS = ("log", "log2", "log10")
# a guard anywhere in the operand: the log belongs to NL001 (a tiny eps) or is fine
GUARD_OPS = frozenset(
    {"clamp", "clamp_", "clamp_min", "clamp_min_", "clip", "clip_", "maximum", "fmax", "minimum", "fmin",
     "nan_to_num", "nan_to_num_", "where", "masked_fill", "masked_fill_", "log1p", "softplus", "exp", "max"}
)
# ops after which a -inf from the log is replaced (the gradient may still be NaN: NL109's business)
SANITIZERS = frozenset({"where", "masked_fill", "masked_fill_", "nan_to_num", "nan_to_num_", "masked_scatter"})
# calls that only reshape, cast or select: a zero stays a zero
PASS_THROUGH = frozenset(
    {"unsqueeze", "view", "reshape", "expand", "expand_as", "view_as", "reshape_as", "to", "type_as",
     "detach", "contiguous", "squeeze", "flatten", "float", "half", "double", "bfloat16", "transpose",
     "permute", "t", "gather", "index_select", "masked_select", "take_along_dim", "clone"}
)
COUNT_OPS = frozenset({"bincount", "histc", "histogram", "count_nonzero"})
COMPARE_OPS = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "isclose", "logical_and", "logical_or", "logical_not"})

_PROB_NAME = re.compile(
    r"^(p|pt|p_t|probs?|probas?|probabilit(y|ies)|\w+_probs?|\w+_probas?|probs?_\w+|\w+_probabilit(y|ies))$",
    re.IGNORECASE,
)
#: casts a one-hot goes through (``F.one_hot(i, n).type(dtype)``)
_CASTS = frozenset({"type", "to", "float", "half", "bfloat16", "double", "type_as"})
_LOG_PROB_NAME = re.compile(r"^(\w+_)?(log_?probs?|logp|lprobs?|log_p)(_\w+)?$", re.IGNORECASE)
_COUNT_NAME = re.compile(
    r"^(counts?|\w+_counts?|counts?_\w+|freqs?|frequenc(y|ies)|\w+_freqs?|hist|histogram|hits|num_\w+|n_\w+)$",
    re.IGNORECASE,
)
_MASK_NAME = re.compile(r"mask|correct|hit", re.IGNORECASE)
_TARGET_NAME = re.compile(
    r"^(y|y_?true|targets?|labels?|gt|gts|ground_?truths?|one_?hot|\w+_targets?|\w+_labels?|\w+_one_?hot|"
    r"targets?_\w+|labels?_\w+|t_onehot)$",
    re.IGNORECASE,
)


def _name_of(node: cst.BaseExpression) -> Optional[str]:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return None


class UnguardedLog(TracksLocals, Rule):
    """
    ## What it does
    Flags `torch.log`, `torch.log2`, `torch.log10` and `.log()` of a value
    that can be exactly 0, with no guard at all:

    - a softmax or sigmoid output, under `log2`/`log10` or reached through
      an index of a variable (the plain `log(softmax(x))` is NL101's);
    - `1 - p` where p is a probability (a sigmoid/softmax output, or a
      variable named `p`, `probs`, `*_prob`...);
    - a ratio whose numerator is a count or a probability (`bincount`,
      `histc`, a sum of a mask or of a comparison, a `counts` variable);
    - a weighted sum of probabilities (`beta * p + (1 - beta) * q`, a
      hand-written log-sum-exp `log(a.exp() + b.exp())` of log-probabilities
      or of negated squares, an average `(F.one_hot(i, n) + probs) / 2` of a
      one-hot and a softmax -- a straight-through estimator's mixture, 0
      wherever the softmax is): adding them is no guard, every term
      underflows at the same entries;
    - an energy (medium: 0 only for a silent or zero input): a sum or mean
      of squares (`stft.pow(2).sum(-1)`, a power spectrum), raised to a power
      or rooted, or a squared magnitude (`stft.abs() ** 2`) -- not a bare
      `abs`, whose log is usually a flow's log-determinant of a learned scale;
    - the log in a hand-written cross-entropy, BCE or entropy:
      `-(y * torch.log(p) + (1 - y) * torch.log(1 - p))`,
      `-(target * torch.log(pred)).sum(1)`, `-(p * torch.log(p)).sum()`.

    ## Why is this bad?
    `log(0)` is `-inf` in every dtype, and its gradient `1/0` is inf, which
    becomes NaN in the chain rule. Low precision makes the 0 common: in
    float16 softmax is 0 for a logit 17.34 below the row max, `sigmoid(x)`
    for x <= -17.34, and p rounds to exactly 1 (so `1 - p` is 0) once
    `1 - p` < 2.44e-4 (bfloat16: 1.95e-3); a count is 0 in any dtype. In a
    hand-written cross-entropy the -inf meets a zero target: `0 * -inf` is
    NaN, where `F.cross_entropy` and `F.binary_cross_entropy_with_logits`
    stay finite. `nanlint confirm` proves it with a new-inf event (the log
    turns a finite 0 into `-inf`) or a new-nan event (`0 * -inf`) at the
    line.

    Not flagged: any log whose operand has a guard, however small (`p + eps`,
    `clamp`, `clamp_min`, `torch.maximum`, `log1p`, a cap that keeps `1 - p`
    above 0: `torch.minimum(p, torch.ones_like(p) * 0.999)`; whether the eps
    or the cap survives float16 is NL001's business); a log inside a `torch.where` branch,
    `masked_fill` or `nan_to_num` (a guarded-branch gradient is NL109's); a
    log NL101 reports (`log(softmax(x))`, `log(sigmoid(x))`).

    ## Example
    ```python
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    entropy = -(probs * torch.log(probs)).sum(-1)
    ```

    ## Use instead
    ```python
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    entropy = -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(-1)
    ```

    ## Fix safety
    Unsafe: the fix clamps the operand at `torch.finfo(p.dtype).tiny`
    (6.10e-5 in float16, whose log is -9.70; 1.18e-38 in bfloat16 and
    float32, log -87.3), which changes the value wherever p was below it and
    zeroes the gradient there. It is offered only when the operand is a
    plain name or attribute (read twice by the fix); the better repair, a
    library loss on the logits, needs the logits and is left to you.
    """

    code = "NL102"
    name = "unguarded-log"
    summary = "log of a value that can be exactly 0 (probability, 1 - p, count ratio, hand-written cross-entropy) is -inf"
    fix_applicability = UNSAFE
    triggers = (re.compile(r"\blog(?:2|10)?_?\s*\("),)  # a call, not the word in a comment
    valid = [
        # look-alikes of a mixture: an eps term, or a term that is not a probability
        Valid("import torch\nmix = torch.log(beta * torch.softmax(t, -1) + (1 - beta) * torch.softmax(s, -1) + 1e-4)\n"),
        Valid("import torch\nlse = torch.log(torch.exp(a) + torch.exp(b))\n"),
        Valid("import torch\nimport torch.nn.functional as F\n"
              "pi = torch.log((F.one_hot(i, n).float() + torch.softmax(x, -1) + 1e-4) / 2)\n"),
        Valid("import torch\ny = torch.log((torch.softmax(a, -1) + torch.softmax(b, -1)) / s)\n"),
        # look-alikes of a power spectrum: guarded, or a cube, or an exp (never 0 before it underflows)
        Valid("import torch\nlogmag = torch.log(stft.pow(2).sum(-1) + 1e-4)\n"),
        Valid("import torch\nc = torch.log((x ** 3).sum(-1))\n"),
        Valid("import torch\ny = torch.log(p + 1e-6)\n"),
        Valid("import torch\ny = -(t * torch.log(p.clamp(min=1e-4))).sum()\n"),
        Valid("import torch\ny = torch.log(torch.softmax(x, -1))\n"),
        Valid("import torch\ny = torch.where(p > 0, p * torch.log(p), 0)\n"),
        Valid("import torch\ny = torch.log1p(-p)\n"),
        Valid("import torch\ny = torch.log(x)\n"),
        Valid("import torch\ny = torch.log(a / b)\n"),
        Valid("import math\ny = -(t * math.log(p))\n"),
        Valid("import torch\ny = torch.log(torch.exp(x) * w)\n"),
        Valid("import torch\nh = torch.nan_to_num(-(p * torch.log(p)))\n"),
    ]
    invalid = [
        Invalid(
            "import torch\nloss = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))\n",
            fixed="import torch\nloss = -(y * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)) + (1 - y) * torch.log(1 - p))\n",
            count=2,
        ),
        Invalid(
            "import torch\nent = -(probs * probs.log()).sum(-1)\n",
            fixed="import torch\nent = -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(-1)\n",
        ),
        Invalid("import torch\nbits = -torch.log2(torch.softmax(x, -1))\n"),
        Invalid("import torch\nc = torch.bincount(ids, minlength=n)\nw = -torch.log(c / c.sum())\n"),
        Invalid("import torch\nq = torch.log(1 - pred_probs)\n"),
        Invalid("import torch\nacc = torch.log((pred == y).float().sum() / n)\n"),
        Invalid("import torch\np = torch.softmax(x, -1)\ny = torch.log(p[..., 0] / p[..., 1])\n"),
        # a mixture of two distributions (distillation), a hand-written log-sum-exp of Gaussians
        Invalid("import torch\nimport torch.nn.functional as F\ndef gkd(s, t, beta):\n"
                "    mix = beta * F.softmax(t, -1) + (1 - beta) * F.log_softmax(s, -1).exp()\n"
                "    return mix.log()\n"),
        # an average with a one-hot (a straight-through estimator's mixture): 0 wherever the softmax underflows
        Invalid("import torch\nimport torch.nn.functional as F\ndef st(logits, ind, n, tau):\n"
                "    pi = (F.one_hot(ind, n).float() + (logits / tau).softmax(-1)) / 2\n"
                "    return pi.log()\n"),
        Invalid("import torch\ndef log_prob(z, loc):\n"
                "    return torch.log(torch.exp(-0.5 * (z - loc) ** 2) + torch.exp(-0.5 * (z + loc) ** 2))\n"),
        # a power spectrum: 0 for a silent frame
        Invalid("import torch\ndef feats(stft, power):\n    spectr = stft.pow(2).sum(-1).pow(power)\n"
                "    return torch.log(spectr)\n"),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.values = LocalValues()
        self.quiet: Set[int] = set()
        # log calls that are a factor of a cross-entropy/entropy product -> what the other factor is
        self.products: Dict[int, str] = {}
        # per function: findings waiting for the end of the function, with the
        # names their statement assigns, and the names later sanitised
        # (`h.masked_fill(...)`, `torch.nan_to_num(h)`, `torch.where(.., h, ..)`, `h[m] = 0`)
        self.pending: List[List[tuple]] = [[]]
        self.sanitized: List[Set[str]] = [set()]
        self.targets: List[List[str]] = []

    # -- deferral ------------------------------------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().visit_FunctionDef(node)
        self.pending.append([])
        self.sanitized.append(set())

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().leave_FunctionDef(node)
        self._flush()

    def leave_Module(self, node: cst.Module) -> None:
        while self.pending:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        pending, sanitized = self.pending.pop(), self.sanitized.pop()
        for node, message, fix, names, confidence in pending:
            if not any(n in sanitized for n in names):
                self.report(node, message, fix, confidence=confidence)

    def visit_Assign(self, node: cst.Assign) -> None:
        names: List[str] = []
        for target in node.targets:
            t = target.target
            if isinstance(t, cst.Name):
                names.append(t.value)
            elif isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name):
                self.sanitized[-1].add(t.value.value)
        self.targets.append(names)

    def leave_Assign(self, node: cst.Assign) -> None:
        super().leave_Assign(node)
        self.targets.pop()

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self.targets.append([node.target.value] if isinstance(node.target, cst.Name) else [])

    def leave_AugAssign(self, node: cst.AugAssign) -> None:
        super().leave_AugAssign(node)
        self.targets.pop()

    # -- context -------------------------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Multiply):
            return
        for a, b in ((node.left, node.right), (node.right, node.left)):
            call = _unwrap_log(self.ctx, a)
            if call is None:
                continue
            operand = log_call_operand(self.ctx, call, LOG_OPS)
            if operand is None:
                continue
            if _same(self.ctx, operand, b):
                self.products[id(call)] = "entropy"
            elif self._target_like(b):
                self.products[id(call)] = "cross-entropy"

    def _target_like(self, node: cst.BaseExpression) -> bool:
        node = _strip(self.ctx, node)
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract) and is_one(node.left):
            node = _strip(self.ctx, node.right)
        name = _name_of(node)
        return name is not None and bool(_TARGET_NAME.match(name))

    # -- the log -------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        self.values.call(node)
        op = torch_op(self.ctx, node)
        if op in SANITIZERS:
            for sub in _walk(node.args if not is_method_call(self.ctx, node) else [node.func]):
                if isinstance(sub, cst.Call):
                    self.quiet.add(id(sub))
                elif isinstance(sub, cst.Name):
                    self.sanitized[-1].add(sub.value)
            if op == "where":
                return
        if id(node) in self.quiet or op not in LOG_OPS:
            return
        operand = log_call_operand(self.ctx, node, LOG_OPS)
        if operand is None:
            return
        if op == "log" and classify(self.ctx, node, self.values) is not None:
            return  # NL101's
        mixture = self._mixture(operand)
        if mixture is None and self._guarded(operand):
            return
        reason = mixture or self._zero_reason(operand)
        product = self.products.get(id(node))
        if reason is None and product is not None and not self._positive(operand):
            reason = "its operand is a predicted probability, which is exactly 0 once it underflows"
        confidence = HIGH
        if reason is None and self._energy(operand):
            # zero only for a silent or zero input (padding, digital silence): real, but not ordinary
            reason, confidence = ("an energy (a sum of squares, a power spectrum) is exactly 0 "
                                  "for a silent or zero input (padding, digital silence)"), MEDIUM
        if reason is None:
            return
        names = self.targets[-1] if self.targets else []
        self.pending[-1].append((node, self._message(op, reason, product), self._fix(node, operand), names,
                                 confidence))

    def _message(self, op: str, reason: str, product: Optional[str]) -> str:
        text = f"`{op}` of a value that can be exactly 0 with no guard: {reason}; {op}(0) = -inf and its gradient is inf"
        if product == "entropy":
            text += ", and p * log(p) is 0 * -inf = NaN where p == 0 (clamp p, or use torch.special.entr / xlogy)"
        elif product == "cross-entropy":
            text += (
                ", and a hand-written cross-entropy gives 0 * -inf = NaN for a zero target "
                "(use F.cross_entropy / F.binary_cross_entropy_with_logits on the logits)"
            )
        return text

    def _fix(self, call: cst.Call, operand: cst.BaseExpression) -> Optional[FixSpec]:
        if not is_reference(operand) or operand.lpar:
            return None
        torch = self.ctx.torch_name()
        text = self.ctx.code(operand)
        new = cst.parse_expression(f"{text}.clamp_min({torch}.finfo({text}.dtype).tiny)")
        tiny = self.ctx.dtype.tiny
        import math

        return FixSpec(
            UNSAFE,
            f"Clamp the operand at finfo(dtype).tiny ({fmt(tiny)} in {self.ctx.dtype.name}, log = {fmt(math.log(tiny))})",
            replace=[(operand, new)],
            imports=("torch",),
        )

    # -- analysis ------------------------------------------------------------------
    def _resolve(self, node: cst.BaseExpression, seen: int = 0) -> cst.BaseExpression:
        """Follow a local name to the value it was assigned (two hops at most)."""
        while isinstance(node, cst.Name) and seen < 2:
            bound = self.values.lookup(node.value)
            if bound is None:
                break
            node, seen = bound, seen + 1
        return node

    def _guarded(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """An additive term, a clamp or another guard anywhere in the operand
        (or in what its local names were assigned)."""
        if depth > 2:
            return False
        for sub in _walk([node]):
            if isinstance(sub, cst.BinaryOperation) and isinstance(sub.operator, cst.Add):
                return True
            if isinstance(sub, cst.Call):
                op = torch_op(self.ctx, sub)
                if op in GUARD_OPS and not (op == "max" and len(sub.args) < (1 if is_method_call(self.ctx, sub) else 2)):
                    return True
                if op in ("add", "add_"):
                    return True
            if isinstance(sub, cst.Name) and depth < 2:
                bound = self.values.lookup(sub.value)
                if bound is node:  # `p = p / p.sum()`: its own read sees the value before
                    bound = self.values.before(node)
                if bound is not None and bound is not node and self._guarded(bound, depth + 1):
                    return True
        return False

    def _positive(self, node: cst.BaseExpression) -> bool:
        node = _strip(self.ctx, self._resolve(node))
        if number(node) is not None:
            return True
        if isinstance(node, cst.Call):
            return torch_op(self.ctx, node) in ("exp", "softplus", "rsqrt", "cosh")
        return False

    def _prob(self, node: cst.BaseExpression) -> Optional[str]:
        """"softmax"/"sigmoid" when the (stripped) value is such an output, directly or through names."""
        node = _strip(self.ctx, node)
        for _ in range(3):
            if not isinstance(node, cst.Name):
                break
            bound = self.values.lookup(node.value)
            if bound is None:
                return None
            node = _strip(self.ctx, bound)
        return prob_call(self.ctx, node, self.values)

    def _zero_reason(self, operand: cst.BaseExpression) -> Optional[str]:
        dtype = self.ctx.dtype
        gap, low, _ = underflow(dtype)
        prob = self._prob(operand)
        if prob == "softmax":
            return f"a softmax output is exactly 0 in {dtype.name} for logits {fmt(gap)} below the row max"
        if prob == "sigmoid":
            return f"sigmoid(x) is exactly 0 in {dtype.name} for x <= {fmt(low)}"
        node = _strip(self.ctx, self._resolve(operand))
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract) and is_one(node.left):
            p = _strip(self.ctx, node.right)
            name = _name_of(p)
            if self._prob(p) is not None or (name is not None and _PROB_NAME.match(name)):
                return (
                    f"`1 - p` of a probability is 0 once p rounds to 1, which in {dtype.name} happens "
                    f"for 1 - p < {fmt(dtype.eps / 4)}"
                )
            return None
        num = None
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide):
            num = node.left
        elif isinstance(node, cst.Call) and torch_op(self.ctx, node) in ("div", "true_divide", "divide"):
            if is_method_call(self.ctx, node):
                num = node.func.value  # type: ignore[union-attr]
            elif node.args:
                num = node.args[0].value
        if num is not None:
            if self._prob(num) is not None:
                return "the numerator of the ratio is a probability, which underflows to 0"
            if self._count(num):
                return "the numerator of the ratio is a count, which can be 0"
            return None
        if isinstance(node, cst.Call) and torch_op(self.ctx, node) in COUNT_OPS:
            return "a count can be 0"
        return None

    def _mixture(self, node: cst.BaseExpression) -> Optional[str]:
        """Why a weighted sum of probabilities (``beta * p + (1 - beta) * q``,
        ``a.exp() + b.exp()`` of log-probabilities or of negated squares) is 0:
        its sum is no guard, every term underflows at the same entries."""
        total = _strip(self.ctx, self._resolve(node))
        if isinstance(total, cst.BinaryOperation) and isinstance(total.operator, (cst.Divide, cst.Multiply)):
            # an average: ``(one_hot + probs) / 2``, ``0.5 * (p + q)``
            scale, total = (total.right, total.left) if isinstance(total.operator, cst.Divide) or number(
                total.right) is not None else (total.left, total.right)
            if not ((number(scale) or 0) > 0):
                return None
            total = _strip(self.ctx, total)
        terms = additive_terms(total)
        if terms is None or not all(self._component(t) for t in terms):
            return None
        gap, _, _ = underflow(self.ctx.dtype)
        return (f"a weighted sum of probabilities is exactly 0 where every term underflows (in "
                f"{self.ctx.dtype.name} exp(x) is 0 for x < -{fmt(gap)}, a softmax output for logits {fmt(gap)} "
                f"below the row max): adding them is no guard")

    def _component(self, term: cst.BaseExpression) -> bool:
        """``p``, ``w * p``, ``p * w`` for a probability ``p`` (a softmax or sigmoid, ``exp`` of
        a log-probability or of a negated square), ``w`` anything else."""
        term = _strip(self.ctx, term)
        if isinstance(term, cst.BinaryOperation) and isinstance(term.operator, cst.Multiply):
            return self._probability_term(term.left) or self._probability_term(term.right)
        return self._probability_term(term)

    def _probability_term(self, node: cst.BaseExpression) -> bool:
        node = _strip(self.ctx, node)
        if self._prob(node) is not None:
            return True
        if isinstance(node, cst.Name):
            bound = self.values.lookup(node.value)
            if bound is None:
                return False
            node = _strip(self.ctx, bound)
        if self._one_hot(node):
            return True
        if not (isinstance(node, cst.Call) and torch_op(self.ctx, node) == "exp"):
            return False
        inner = node.func.value if is_method_call(self.ctx, node) else (  # type: ignore[union-attr]
            node.args[0].value if node.args else None)
        if inner is None:
            return False
        inner = _strip(self.ctx, inner)
        if isinstance(inner, cst.Call) and torch_op(self.ctx, inner) == "log_softmax":
            return True
        name = _name_of(inner)
        if name is not None and _LOG_PROB_NAME.match(name):
            return True
        # exp(-c * x ** 2), exp(-(x ** 2) / s): an unnormalised Gaussian density, at most 1
        negated = isinstance(inner, cst.UnaryOperation) and isinstance(inner.operator, cst.Minus)
        if not negated and isinstance(inner, cst.BinaryOperation) and isinstance(inner.operator, cst.Multiply):
            negated = any(number(side) is not None and number(side) < 0 for side in (inner.left, inner.right))
        return negated and any(isinstance(n, cst.BinaryOperation) and isinstance(n.operator, cst.Power)
                               and number(n.right) == 2 for n in _walk([inner]))

    def _one_hot(self, node: cst.BaseExpression) -> bool:
        """``F.one_hot(i, n)``, cast or not: 0 in every entry but one."""
        node = look_through(self.ctx, node, _CASTS)
        return isinstance(node, cst.Call) and torch_op(self.ctx, node) == "one_hot"

    def _energy(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """A sum or mean of squares (``stft.pow(2).sum(-1)``), raised to a power or
        rooted, or a squared magnitude (``stft.abs() ** 2``): a power spectrum, an
        energy. Not a bare ``abs``: ``log(abs(scale))``, the log-determinant of a
        flow's learned scale, is 0 only for a weight of exactly 0."""
        node = _strip(self.ctx, self._resolve(node))
        if depth > 3:
            return False
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power):
            return self._energy(node.left, depth + 1) or number(node.right) == 2 and self._energy_base(node.left)
        if not isinstance(node, cst.Call):
            return False
        op = torch_op(self.ctx, node)
        inner = node.func.value if is_method_call(self.ctx, node) else (  # type: ignore[union-attr]
            node.args[0].value if node.args else None)
        if inner is None:
            return False
        if op in ("pow", "sqrt"):
            return self._energy(inner, depth + 1) or op == "pow" and self._squared(node) and self._energy_base(inner)
        if op in ("sum", "mean"):
            inner = _strip(self.ctx, inner)
            return (isinstance(inner, cst.BinaryOperation) and isinstance(inner.operator, cst.Power)
                    and number(inner.right) == 2) or (
                isinstance(inner, cst.Call) and torch_op(self.ctx, inner) in ("pow", "square") and (
                    torch_op(self.ctx, inner) == "square" or self._squared(inner)))
        return False

    def _squared(self, call: cst.Call) -> bool:
        exponent = arg(call, 0 if is_method_call(self.ctx, call) else 1, "exponent")
        return exponent is not None and number(exponent.value) == 2

    def _energy_base(self, node: cst.BaseExpression) -> bool:
        """``x.abs()`` squared: the square of a magnitude."""
        node = _strip(self.ctx, node)
        return isinstance(node, cst.Call) and torch_op(self.ctx, node) in ("abs", "absolute")

    def _count(self, node: cst.BaseExpression) -> bool:
        node = _strip(self.ctx, node)
        name = _name_of(node)
        if isinstance(node, cst.Name):
            if _COUNT_NAME.match(node.value):
                return True
            bound = self.values.lookup(node.value)
            if bound is None:
                return False
            node = _strip(self.ctx, bound)
        elif name is not None:
            return bool(_COUNT_NAME.match(name))
        if isinstance(node, cst.Call):
            op = torch_op(self.ctx, node)
            if op in COUNT_OPS:
                return True
            if op in ("sum", "cumsum", "nansum"):
                inner = node.func.value if is_method_call(self.ctx, node) else (node.args[0].value if node.args else None)  # type: ignore[union-attr]
                if inner is None:
                    return False
                inner = _strip(self.ctx, inner)
                if isinstance(inner, cst.Comparison):
                    return True
                if isinstance(inner, cst.Call) and torch_op(self.ctx, inner) in COMPARE_OPS:
                    return True
                inner_name = _name_of(inner)
                return inner_name is not None and bool(_MASK_NAME.search(inner_name))
        return False


def _strip(ctx, node: cst.BaseExpression) -> cst.BaseExpression:
    """Look through reshapes, casts, indexing and selections: a zero stays a zero."""
    return look_through(ctx, node, PASS_THROUGH)


def _same(ctx, a: cst.BaseExpression, b: cst.BaseExpression) -> bool:
    a, b = _strip(ctx, a), _strip(ctx, b)
    if isinstance(a, (cst.Name, cst.Attribute)) and isinstance(b, (cst.Name, cst.Attribute)):
        return ctx.code(a.with_changes(lpar=[], rpar=[])) == ctx.code(b.with_changes(lpar=[], rpar=[]))
    return False


def _unwrap_log(ctx, node: cst.BaseExpression) -> Optional[cst.Call]:
    """The log call of a factor ``torch.log(p)``, ``-torch.log(p)``."""
    while isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        node = node.expression
    if isinstance(node, cst.Call) and torch_op(ctx, node) in LOG_OPS:
        return node
    return None


def _walk(roots) -> List[cst.CSTNode]:
    out: List[cst.CSTNode] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Lambda, cst.FunctionDef)):
            continue
        out.append(node)
        stack.extend(children(node))
    return out
