from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import libcst as cst

from nanlint.dtypes import DtypeFacts, fmt
from nanlint.finding import HIGH, MEDIUM, SAFE
from nanlint.patterns import arg, is_method_call, number, subject, torch_op
from nanlint.resolve import dotted_name
from nanlint.rule import FixSpec, Invalid, Rule, Valid
from nanlint.probabilities import (
    underflow,
    LocalValues,
    TracksLocals,
    prob_call,
    Match,
    classify,
)


#: a temperature from which the logits' needed span (17.34*T in float16) is
#: beyond what trained logits reach: 69 at T = 4
_LARGE_TEMPERATURE = 4.0


class LogOfSoftmax(TracksLocals, Rule):
    """
    ## What it does
    Flags the log of a softmax or a sigmoid computed separately:
    `torch.log(F.softmax(x, dim))`, `x.softmax(dim).log()`,
    `torch.log(torch.sigmoid(x))`, `torch.log(1 - torch.sigmoid(x))`, also
    when the probability is indexed (`probs[i, y]`, `probs.gather(1, y)`),
    held by a local variable (`p = F.softmax(x, -1)` ... `torch.log(p)`) or
    by an `nn.Softmax`/`nn.Sigmoid` module attribute.

    ## Why is this bad?
    softmax and sigmoid round small probabilities to exactly 0: in float16,
    softmax is 0 for every logit 17.34 or more below its row's max and
    `sigmoid(x)` is 0 for x <= -17.34; `1 - sigmoid(x)` is 0 already for
    x >= 8.32 because sigmoid rounds to 1 (bfloat16: 92.75, -88.75 and 6.24;
    even float32: 103.98, -88.73 and 16.64). The log of that 0 is `-inf`,
    and its gradient is NaN (`inf * 0`) even when the loss masks the value.
    `log(softmax([0, -20]))` is `[0, -inf]` in float16 where
    `log_softmax` gives `[0, -20]`, and `log(sigmoid(-20))` is `-inf` where
    `F.logsigmoid(-20)` is -20. `nanlint confirm` proves it with a new-inf
    event (the log turns a finite 0 into `-inf`) or a new-nan event at the
    line.

    Not flagged: a log whose operand is guarded (`softmax(x) + eps`,
    `.clamp(min=...)`): the guard's size is NL001's business; a `-inf` that
    only sorts last (a beam score read by `topk`). Where no gradient flows
    (`no_grad`, inference code) the finding is medium: `-inf` is log(0)'s
    right value there, and becomes NaN only if a later step multiplies it by 0
    or subtracts it from itself; a log multiplied right away by a value that is
    not a number (an entropy `p * log(p)`, `log(p) * weights`) stays high, since
    the product is NaN wherever that value is 0. Medium too where
    the input is divided by a temperature of 4 or more that the code names
    (`softmax(x / T)` with T a literal, a constant or a parameter's default,
    as in distillation losses, `temperature=20`): the logits must then span
    17.34*T (69 at T = 4) to underflow, beyond what trained logits reach.
    Medium also for a softmax in a project that casts nothing to half (no
    `.half()`, `torch_dtype=torch.float16`, DeepSpeed `"fp16"` config...):
    CUDA/MPS autocast computes softmax in float32, so only a model run in
    pure half underflows. A sigmoid stays float16 under autocast. A log of
    a softmax or a sigmoid is medium, too, in a project where nothing runs
    in reduced precision at all (float32 and bfloat16 underflow only 88.73
    below 0, or for a logit gap of 103.98); a log of `1 - sigmoid(x)` is
    not, since float32 rounds sigmoid(x) to 1 from x >= 16.64.

    ## Example
    ```python
    log_probs = torch.log(F.softmax(logits, dim=-1))
    loss = -torch.log(torch.sigmoid(pos - neg))
    ```

    ## Use instead
    ```python
    log_probs = F.log_softmax(logits, dim=-1)
    loss = -F.logsigmoid(pos - neg)
    ```

    ## Fix safety
    Safe: `log_softmax` and `logsigmoid` compute the same function without
    the intermediate rounding (every argument of the softmax, its `dim` and
    `dtype` included, is kept; `log(1 - sigmoid(x))` becomes
    `F.logsigmoid(-x)`, an identity). The fix is offered only when the
    probability is computed inside the log (not through a variable or a
    module attribute, which other code may also use).
    """

    code = "NL101"
    name = "log-of-softmax"
    summary = "log(softmax(x)) / log(sigmoid(x)) is -inf where the probability underflows; use log_softmax / logsigmoid"
    fix_applicability = SAFE
    # one alternative per word: each is found as a plain substring first
    triggers = (re.compile(r"\bsoftmax\b|\bsigmoid\b|\bexpit\b|\bSoftmax\b|\bSigmoid\b"),)
    valid = [
        Valid("import torch.nn.functional as F\ny = F.log_softmax(x, dim=-1)\n"),
        Valid("import torch\ny = torch.log(torch.softmax(x, -1) + 1e-6)\n"),
        Valid("import torch\ny = torch.log(torch.sigmoid(x).clamp(min=1e-4))\n"),
        Valid("import numpy as np\nfrom scipy.special import softmax\ny = np.log(softmax(x))\n"),
        Valid("import torch\ndef softmax(x):\n    return x\ny = torch.log(softmax(x))\n"),
        Valid("import torch\np = torch.sigmoid(x)\np = p * 0.98 + 0.01\ny = torch.log(p)\n"),
        Valid("import torch\np = torch.sigmoid(x)\np.clamp_(min=1e-4)\ny = torch.log(p)\n"),
        Valid("import torch\ny = torch.log(torch.tanh(x) + 1)\n"),
        Valid("import math\nimport torch\ny = math.log(torch.sigmoid(x).item())\n"),
        Valid("import torch\ny = torch.log(self.model.softmax(h @ w))\n"),
    ]
    invalid = [
        Invalid(
            "import torch.nn.functional as F\nimport torch\ny = torch.log(F.softmax(x, dim=-1))\n",
            fixed="import torch.nn.functional as F\nimport torch\ny = F.log_softmax(x, dim=-1)\n",
        ),
        Invalid(
            "import torch\ny = x.softmax(-1, dtype=torch.float32).log()\n",
            fixed="import torch\ny = x.log_softmax(-1, dtype=torch.float32)\n",
        ),
        Invalid(
            "import torch\nimport torch.nn.functional as F\nloss = -torch.log(torch.sigmoid(pos - neg)).mean()\n",
            fixed="import torch\nimport torch.nn.functional as F\nloss = -F.logsigmoid(pos - neg).mean()\n",
        ),
        Invalid(
            "import torch\ny = torch.log(1 - torch.sigmoid(a + b))\n",
            fixed="import torch\ny = torch.nn.functional.logsigmoid(-(a + b))\n",
        ),
        Invalid(
            "import torch as T\ny = (1.0 - x.sigmoid()).log()\n",
            fixed="import torch as T\ny = T.nn.functional.logsigmoid(-x)\n",
        ),
        Invalid(
            "import torch\nnll = -torch.log(torch.softmax(s, 1)[torch.arange(n), y])\n",
            fixed="import torch\nnll = -torch.log_softmax(s, 1)[torch.arange(n), y]\n",
        ),
        Invalid("import torch\ndef f(x):\n    p = torch.softmax(x, -1)\n    return -(p * torch.log(p)).sum(-1)\n"),
        Invalid(
            "import torch\nfrom torch import nn\nclass M(nn.Module):\n"
            "    def __init__(self):\n        super().__init__()\n        self.act = nn.Sigmoid()\n"
            "    def forward(self, x):\n        return torch.log(self.act(x))\n"
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.values = LocalValues()

    def visit_Call(self, node: cst.Call) -> None:
        self.values.call(node)
        match = classify(self.ctx, node, self.values)
        if match is None or self.ctx.facts.only_ordered(node):
            return  # the -inf only sorts last (a confidence, a beam score)
        message, confidence = self._message(match), HIGH
        if not self.ctx.facts.grad_flows(node) and not self._times_a_value(node):
            message = message.replace(" and a NaN gradient", "") + (
                " (no gradient flows here: the -inf becomes NaN only where it is later multiplied by 0 or "
                "subtracted from itself)")
            confidence = MEDIUM
        scale = self._temperature(match)
        if scale is not None:
            gap, low, high = underflow(self.ctx.dtype)
            reach = {"softmax": f"logits spanning {fmt(gap * scale)}", "sigmoid": f"x <= {fmt(low * scale)}"}.get(
                match.kind, f"x >= {fmt(high * scale)}")
            note = (f" (x is divided by a temperature of {fmt(scale)} first: only {reach} underflow, "
                    "unusual for trained logits)")
            message = message.replace("; use ", note + "; use ", 1)
            confidence = MEDIUM
        # float32 and bfloat16 underflow only for x <= -88.73 (a logit gap of 103.98): the log of a
        # softmax or sigmoid is a float16 hazard; 1 - sigmoid(x) is 0 in float32 too from x >= 16.64
        self.report(node, message, self._fix(node, match), confidence=confidence,
                    autocast_float32="softmax" if match.kind == "softmax" else None,
                    needs_half=match.kind != "one_minus_sigmoid")

    def _times_a_value(self, node: cst.Call) -> bool:
        """The log is multiplied by a value that is not a number literal
        (``log(p) * weights``, ``p * log(p)``): where that value is 0, the
        -inf is NaN in the result itself, gradient or not."""
        parent = self.ctx.facts.scopes.parent.get(node)
        if not (isinstance(parent, cst.BinaryOperation) and isinstance(parent.operator, cst.Multiply)):
            return False
        other = parent.right if parent.left is node else parent.left
        return number(other) is None

    def _temperature(self, match: Match) -> Optional[float]:
        """The temperature T the probability's input is divided by
        (``softmax(x / T)``, ``(x / self.t).sigmoid()``, through one local),
        when it is at least ``_LARGE_TEMPERATURE``: the logits must then span
        17.34*T (float16) to underflow. T is a number the code names: a
        literal, a constant, or a parameter's default (the usual value)."""
        prob = match.prob
        op = torch_op(self.ctx, prob)
        x = subject(self.ctx, prob) if op is not None else (prob.args[0].value if prob.args else None)
        if isinstance(x, cst.Name):
            x = self.ctx.facts.scopes.assigned_value(x)
        divisor = None
        if isinstance(x, cst.BinaryOperation) and isinstance(x.operator, cst.Divide):
            divisor = x.right
        elif isinstance(x, cst.Call) and isinstance(x.func, cst.Attribute) and x.func.attr.value in ("div", "true_divide") \
                and is_method_call(self.ctx, x) and len(x.args) == 1:
            divisor = x.args[0].value
        if divisor is None:
            return None
        scale = self.ctx.facts.typical_number(divisor)
        return scale if scale is not None and scale >= _LARGE_TEMPERATURE else None

    # -- messages ------------------------------------------------------------------
    def _message(self, match: Match) -> str:
        dtype = self.ctx.dtype
        gap, sig_low, sig_high = underflow(dtype)
        via = f" (through `{match.name}`)" if match.name else ""
        if match.kind == "softmax":
            return (
                f"log of a softmax{via}: softmax is exactly 0 in {dtype.name} for logits {fmt(gap)} or more "
                f"below the row max, so log gives -inf and a NaN gradient; use log_softmax"
            )
        if match.kind == "sigmoid":
            return (
                f"log of a sigmoid{via}: sigmoid(x) is exactly 0 in {dtype.name} for x <= {fmt(sig_low)}, "
                f"so log gives -inf and a NaN gradient; use F.logsigmoid(x)"
            )
        return (
            f"log(1 - sigmoid(x)){via}: sigmoid rounds to 1 in {dtype.name} for x >= {fmt(sig_high)}, "
            f"so log(0) = -inf and a NaN gradient; use F.logsigmoid(-x)"
        )

    # -- fixes ---------------------------------------------------------------------
    def _fix(self, call: cst.Call, match: Match) -> Optional[FixSpec]:
        prob = match.prob
        if match.name is not None or prob_call(self.ctx, prob) is None:
            return None  # through a variable or an nn.Softmax/nn.Sigmoid module
        imports: Tuple[str, ...] = ()
        if match.kind == "softmax":
            func = self._log_softmax_func(prob)
            if func is None:
                return None
            new: cst.BaseExpression = prob.with_changes(func=func, lpar=[], rpar=[])
            for wrapper in reversed(match.wrappers):
                new = _rewrap(wrapper, new)
            if self.ctx.names.alias_for("torch") is None and _mentions(func, "torch"):
                imports = ("torch",)
            message = "Use log_softmax (same arguments)"
        else:
            x = subject(self.ctx, prob)
            if x is None:
                return None
            if match.kind == "one_minus_sigmoid":
                x = _negate(x)
            else:
                x = x.with_changes(lpar=[], rpar=[])
            functional = self.ctx.names.alias_for("torch.nn.functional")
            if functional is None:
                functional = f"{self.ctx.torch_name()}.nn.functional"
                imports = ("torch",)
            new = cst.Call(func=cst.parse_expression(f"{functional}.logsigmoid"), args=[cst.Arg(x)])
            for wrapper in reversed(match.wrappers):
                new = _rewrap(wrapper, new)
            message = "Use F.logsigmoid(-x)" if match.kind == "one_minus_sigmoid" else "Use F.logsigmoid(x)"
        return FixSpec(SAFE, message, replace=[(call, new)], imports=imports)

    def _log_softmax_func(self, prob: cst.Call) -> Optional[cst.BaseExpression]:
        func = prob.func
        if is_method_call(self.ctx, prob):
            assert isinstance(func, cst.Attribute)
            return func.with_changes(attr=cst.Name("log_softmax"))
        if isinstance(func, cst.Attribute):
            return func.with_changes(attr=cst.Name("log_softmax"))
        qualified = self.ctx.resolve(func)
        if qualified is None:
            return None
        module = qualified.rpartition(".")[0]
        if module == "torch":
            return cst.parse_expression(f"{self.ctx.torch_name()}.log_softmax")
        if module == "torch.special":
            return cst.parse_expression(f"{self.ctx.torch_name()}.special.log_softmax")
        if module == "torch.nn.functional":
            functional = self.ctx.names.alias_for("torch.nn.functional")
            return cst.parse_expression(f"{functional or self.ctx.torch_name() + '.nn.functional'}.log_softmax")
        return None


def _mentions(node: cst.BaseExpression, name: str) -> bool:
    text = dotted_name(node)
    return text is not None and text.split(".")[0] == name


def _rewrap(wrapper: cst.BaseExpression, inner: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(wrapper, cst.Subscript):
        return wrapper.with_changes(value=inner, lpar=[], rpar=[])
    assert isinstance(wrapper, cst.Call) and isinstance(wrapper.func, cst.Attribute)
    return wrapper.with_changes(func=wrapper.func.with_changes(value=inner), lpar=[], rpar=[])


_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)


def _negate(x: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(x, cst.UnaryOperation) and isinstance(x.operator, cst.Minus):
        return x.expression.with_changes(lpar=[], rpar=[])
    x = x.with_changes(lpar=[], rpar=[])
    if not isinstance(x, _ATOMS):
        x = x.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.UnaryOperation(operator=cst.Minus(), expression=x)
