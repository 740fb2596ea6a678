from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import libcst as cst

from nanlint.engine import subtree, children

from nanlint.analysis import BF16, EDGE, HALF_ONLY, HOST, INTEGER, ORDINARY, WEIGHT, WIDE
from nanlint.analysis.safeguards import makes_model_half, trains_float32_adapters
from nanlint.finding import HIGH, LOW, MEDIUM
from nanlint.dtypes import FLOAT16, fmt
from nanlint.finding import UNSAFE
from nanlint.patterns import additive_terms, look_through, arg, is_method_call, is_reference, number, torch_op
from nanlint.rule import FixSpec, Invalid, Rule, Valid

# -- what the guards are ---------------------------------------------------------

# Hazard classes. RECIP: the guard ends up in a reciprocal (a divisor, a clamped
# divisor, the derivative of log, an optimizer's update): a subnormal guard keeps
# the forward pass finite but 1/v overflows float16 for v < 1.53e-5. ROOT: the
# guard sits under a square root (hand-written norms, distances) or is the lower
# bound of a log argument: only a guard that rounds to 0 is a hazard (measured:
# hand-written LayerNorm/RMSNorm with a subnormal eps such as 1e-7 or 1e-6 is
# finite in forward and backward; `log(x.clamp_min(1e-6))` has a finite value
# and a zero gradient where clamped).
RECIP = "recip"
ROOT = "root"
# names of dtypes chosen for accumulation (`dtype=acc_type`)
_ACC_NAME = re.compile(r"acc|fp32|float32|float64|compute|opmath|upcast", re.IGNORECASE)
_MASK_NAME = re.compile(r"mask", re.IGNORECASE)

# float16-safe replacement values for an ``eps=`` literal, per class
SAFE_VALUE = {RECIP: "1e-4", ROOT: "1e-6"}

LOG_OPS = frozenset({"log", "log2", "log10"})
ROOT_OPS = frozenset({"sqrt", "rsqrt"})
DIV_OPS = frozenset({"div", "div_", "true_divide", "true_divide_", "divide", "divide_"})
RECIPROCAL_OPS = frozenset({"reciprocal", "reciprocal_"})
CLAMP_OPS = frozenset({"clamp", "clamp_", "clip", "clip_"})
CLAMP_MIN_OPS = frozenset({"clamp_min", "clamp_min_"})
# calls that only reshape/cast: a guard under them is still the same guard
PASS_THROUGH = frozenset(
    {
        "unsqueeze", "view", "reshape", "expand", "expand_as", "view_as", "reshape_as",
        "to", "type_as", "detach", "contiguous", "squeeze", "flatten", "float", "half",
        "transpose", "permute", "t",
    }
)

# torch ops computing in the input dtype whose ``eps`` is a guard: qualified
# name -> (positional index of eps, hazard class, extra condition)
EPS_OPS: Dict[str, Tuple[Optional[int], str]] = {
    "torch.nn.functional.normalize": (3, RECIP),
    "torch.nn.functional.cosine_similarity": (3, RECIP),
    "torch.cosine_similarity": (3, RECIP),
    "torch.nn.CosineSimilarity": (1, RECIP),
    "torch.nn.modules.distance.CosineSimilarity": (1, RECIP),
    "torch.nn.functional.gaussian_nll_loss": (4, RECIP),
    "torch.nn.GaussianNLLLoss": (None, RECIP),
    "torch.logit": (1, RECIP),
    "torch.special.logit": (1, RECIP),
}
# eps used only when log_input=False
POISSON_OPS: Dict[str, Optional[int]] = {
    "torch.nn.functional.poisson_nll_loss": 5,
    "torch.nn.PoissonNLLLoss": 3,
}

# torch.optim optimizers: class name -> positional index of eps
OPTIMIZERS: Dict[str, int] = {
    "Adam": 3, "AdamW": 3, "Adamax": 3, "NAdam": 3, "RAdam": 3, "SparseAdam": 3,
    "RMSprop": 3, "Adadelta": 3, "Adagrad": 5,
}

# the default eps of the optimizers above whose default rounds to 0 in float16
DEFAULT_OPTIMIZER_EPS: Dict[str, float] = {
    "Adam": 1e-8, "AdamW": 1e-8, "Adamax": 1e-8, "NAdam": 1e-8, "RAdam": 1e-8, "SparseAdam": 1e-8,
    "RMSprop": 1e-8, "Adagrad": 1e-10,
}

#: a file that cleans inf/NaN somewhere (``nan_to_num``, ``isfinite``...)
_CLEANING_TEXT = re.compile(r"nan_to_num|isfinite|isnan|isinf")

# calls whose arguments are tolerances, never guards
TOLERANCE_CALLS = frozenset(
    {
        "allclose", "isclose", "assert_close", "assert_allclose", "assertAlmostEqual",
        "assertNotAlmostEqual", "assertEqual", "assertNotEqual", "assertLess",
        "assertLessEqual", "assertGreater", "assertGreaterEqual", "assertTrue",
        "assertFalse", "approx", "assert_array_almost_equal", "assert_almost_equal",
    }
)

# evidence that an arithmetic expression works on Python/NumPy numbers, not tensors
NON_TENSOR_HEADS = frozenset(
    {"math", "cmath", "np", "numpy", "jnp", "jax", "scipy", "random", "statistics", "sympy", "tl", "triton"}
)
NON_TENSOR_BUILTINS = frozenset({"len", "float", "int", "sum", "round", "abs", "min", "max", "range", "time", "perf_counter"})
NON_TENSOR_METHODS = frozenset({"item", "numpy", "tolist", "total_seconds", "time", "perf_counter", "elapsed_time", "count"})

FLOAT32_DTYPES = frozenset(
    {"torch.float32", "torch.float", "torch.float64", "torch.double"}
)

_SPACES = re.compile(r"\s+")

DIV_ZERO = "so a zero divisor gives inf or NaN"
LOG_ZERO = "so log(0) = -inf"
ROOT_ZERO = {"sqrt": "so sqrt(0) has an infinite gradient", "rsqrt": "so rsqrt(0) = inf"}
# why a guard's finding is high or medium confidence (``Facts.zero_case``)
ORDINARY_ZERO = (
    "; the guarded value is a probability, which is exactly 0 in float16 for ordinary inputs "
    "(a sigmoid output below 5.96e-8: a logit below -17.3; 1 - p once p > 0.9995)"
)
HALF_ONLY_ZERO = (
    "; the guarded value is a probability (a softmax or exp output), exactly 0 in float16 once a logit "
    "is 17 below the rest; CUDA/MPS autocast computes softmax and exp in float32, where the guard works, "
    "so it fails in a model cast to half"
)
WEIGHT_ZERO = (
    "; the guarded value is a learned parameter (or exp of one), which reaches the bound only for a trained "
    "value far from its initialisation (exp(w) < 1.5e-5 needs w < -11)"
)
HALF_FILE = " (this file casts to half without autocast)"
#: how surely a guarded value reaches 0, for a literal reached by several uses
_REACH_RANK = {WEIGHT: -1, EDGE: 0, HALF_ONLY: 1, ORDINARY: 2}
EDGE_ZERO = "; this needs the guarded value to be exactly 0 (a zero or constant row)"
SATURATED_SOME = (
    "; at some calls in this file the overflow only reaches a sigmoid/tanh, which saturates it to what "
    "float32 gives (sigmoid(inf) = 1, derivative 0); whether it matters depends on the other calls, which "
    "pass the result on where this file does not show"
)
BOUNDED_QUOTIENT = (
    "; the numerator is at most the guarded value (its norm, absolute maximum or range), so the quotient is at most 1 "
    "and only its gradient at the bound overflows, for an all-zero vector"
)
#: a file that may saturate an overflow (the text pre-check of ``Facts.overflow_saturates``)
_SATURATING_TEXT = re.compile(r"sigmoid|tanh|expit|erf\b")
OPTIM_ZERO = "so once exp_avg_sq underflows the update divides by 0 and the parameters become inf/NaN in one step"


def _strip(node: cst.BaseExpression, ctx) -> cst.BaseExpression:
    """Look through reshapes, casts and indexing: ``(n + eps)[..., None]``,
    ``(n + eps).unsqueeze(-1)`` guard like ``n + eps``."""
    return look_through(ctx, node, PASS_THROUGH)


def _scalar_like(node: cst.BaseExpression) -> bool:
    """Python arithmetic on names and an integer (``self.num_layers - 1``):
    not a tensor."""
    if not (isinstance(node, cst.BinaryOperation) and isinstance(node.right, cst.Integer)):
        return False  # `1 - p` is a probability's complement, `n - 1` a count
    return not any(isinstance(sub, (cst.Call, cst.Subscript)) for sub in subtree(node.left, 60))


def _self_attr(node: cst.BaseExpression) -> Optional[str]:
    if (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
    ):
        return node.attr.value
    return None


# -- bookkeeping of names --------------------------------------------------------


#: said of an optimizer built in another function than the float16 cast
ELSEWHERE = "; the cast is in another function than this optimizer, which may get float32 parameters"


@dataclass
class Source:
    """Where a value may come from: a literal, a parameter, a module-level name,
    a ``self.<attr>``, or several of these (``eps or 1e-8``)."""

    kind: str  # "lit", "param", "module", "attr", "const", "any"
    node: Optional[cst.CSTNode] = None
    scope: Optional["FuncScope"] = None
    name: str = ""
    klass: Optional["ClassInfo"] = None
    parts: Tuple["Source", ...] = ()


@dataclass
class Binding:
    value: Optional[cst.BaseExpression]
    source: Optional[Source]
    #: ``name += v``: the term added in place (a guard added before the name divides)
    added: Optional[cst.BaseExpression] = None


@dataclass
class FuncScope:
    node: Optional[cst.FunctionDef]
    klass: Optional["ClassInfo"]
    params: Dict[str, Tuple[cst.Param, int]] = field(default_factory=dict)
    assigns: Dict[str, List[Binding]] = field(default_factory=dict)
    #: parameters used as a guard: name -> the use
    guard_params: Dict[str, "Use"] = field(default_factory=dict)
    #: decorated to compute in float32 (``@pw_cast_for_opmath``, ``cast_inputs=torch.float32``)
    fp32: bool = False
    #: parameters whose default is a name (``eps=EPS``, ``eps=consts.EPS``): where it comes from,
    #: read where the function is defined
    default_sources: Dict[str, Source] = field(default_factory=dict)

    def lookup(self, name: str) -> Optional[Binding]:
        bindings = self.assigns.get(name)
        if bindings:
            return bindings[-1]
        return None


@dataclass
class ClassInfo:
    node: cst.ClassDef
    #: self.<attr> and class-level assignments: attr -> sources
    attrs: Dict[str, List[Optional[Source]]] = field(default_factory=dict)
    init: Optional[FuncScope] = None


@dataclass
class Use:
    """A place where a value acts as a guard."""

    role: str  # "is added to the divisor in": completed by the quoted node
    cls: str  # RECIP or ROOT
    node: cst.CSTNode  # the guarding expression
    zero: str  # what happens when the guard is 0
    quote: bool = True  # quote the node after the role
    fixable: bool = False  # the literal may be replaced by a safe value (eps= forms)
    subject: Optional[cst.BaseExpression] = None  # for finfo(subject.dtype) fixes
    finfo: str = ""  # "eps" or "tiny"
    masked: bool = False  # the divisor counts a mask: no gradient, numerator 0 where it is 0
    reach: str = EDGE  # how the guarded value reaches 0 (``Facts.zero_case``): ORDINARY is high confidence
    saturates: str = ""  # where the quotient's overflow goes (``Facts.overflow_saturates``): "all", "some", ""
    bounded: bool = False  # |numerator| <= the guarded value (``x / x.norm()``): the quotient is at most 1

    def but(self, **changes) -> "Use":
        return replace(self, **changes)


@dataclass
class CallSite:
    name: str
    call: cst.Call
    args: List[Tuple[cst.Arg, Optional[Source]]]


class TinyEpsilon(Rule):
    """
    ## What it does
    Flags a float literal `0 < v < 6.1e-5` (the smallest normal float16, option
    `threshold`) that acts as a numerical guard: added to a divisor
    (`a / (b + 1e-12)`, or in place before it: `wa += 1e-8; t / wa`), added inside `log`, `sqrt` or `rsqrt`, as the lower
    bound of a clamp that guards a divisor or a log (`clamp(min=v)`,
    `clamp_min(v)`, `max(x, v)`), as the `eps` of ops that compute in the input
    dtype (`F.normalize`, `F.cosine_similarity`, `gaussian_nll_loss`, `logit`,
    and functions and classes of the same file whose `eps` parameter ends up in
    such a guard), or as the `eps` of a `torch.optim` optimizer in a file that
    runs the model in half precision (`.half()`, `.to(torch.float16)`) without
    AMP -- also an optimizer that keeps its default eps (`Adam(params)`: 1e-8,
    Adagrad 1e-10), reported at the call, with an unsafe fix that passes
    `eps=1e-4` (not when arguments come from `**config`). A guard given through a name (`EPS = 1e-12` ... `x / (n + EPS)`, a
    parameter default `eps=1e-8`, `self.eps = eps`, `self.eps = 1e-8` in
    `__init__`) is reported on the binding. A guard whose value is defined in
    another module of the checked project (`from .consts import EPS`,
    `consts.EPS`, a re-export through an `__init__`) or is a config field's
    default (`config.eps` with `config: Config` annotated or `config =
    Config()`, where `Config` -- a dataclass, a config class -- declares
    `eps: float = 1e-8`, in this file or an imported one) is reported where it
    enters this file's guard (the name or attribute read), and the message
    says where it is defined: a file's findings can only point into the file.
    How sure a finding is depends on how the guarded value reaches 0 (the
    shared `zero_case` fact). High: ordinary inputs get there in float16 -- a
    sigmoid output is exactly 0 once its logit is below -17.3 (smallest
    subnormal 5.96e-8), and `1 - p` is 0 once `p > 0.9995`; a function's
    parameter counts when a call in the file passes such a value. A softmax
    output, `exp` of a non-positive value, a helper or layer returning
    probabilities, a sigmoid of a sum, and a variable named like a
    probability (`probs`, `*_prob`, `p_attn`) where the code shows nothing
    else, underflow the same way only where they are computed in float16:
    CUDA/MPS autocast computes softmax, exp and sum in float32, where the
    guard works. They are high in a file that casts its model to half
    (`model.half()`, `.to(torch.float16)` on a module, a loader given
    `torch_dtype=torch.float16`) without autocast, and medium elsewhere. An
    optimizer's `eps` on float16 parameters is high too (`exp_avg_sq`
    underflows for ordinary gradients); a cast of an input tensor does not
    make the parameters half, and PEFT adapters (`get_peft_model`) are
    float32. Medium: everything else -- norms, variances, sums and counts,
    the `eps` of `F.normalize`/`cosine_similarity`: 0 needs a zero or
    constant row, a real but rarer input (shown with
    `--min-confidence medium`). Low: a learned parameter or `exp` of one (a
    Snake activation's `1 / (alpha + 1e-9)`), which reaches the bound only for
    a trained weight far from its initialisation. Low too: a parameter
    default (`def normalize(t, eps=1e-12)`, `__init__(self, dim, eps=1e-8)`)
    that every call of the function or class in this file overrides
    (`normalize(x, eps=1e-4)`): only callers elsewhere get the default. In a
    script that shows no reduced precision at all, every finding is low
    (README, Confidence).

    A subnormal divisor bound (`6e-8 <= v < 1.53e-5`, e.g. the `1e-5` of an
    inverse sigmoid `log(x.clamp(min=eps) / (1 - x).clamp(min=eps))`) is not
    0, so only the quotient's overflow is at stake (1/1e-5 = 1e5 > 65504).
    Where every use of that overflow ends in a function that saturates it --
    `sigmoid(delta + inverse_sigmoid(ref))`: sigmoid(inf) = 1, what float32
    gives, with a zero derivative -- through additions, `log`/`exp`, local
    names, `t[..., :2] += v` and every call of the helper in the file, the
    guard is not flagged; where only some calls of the helper do so (others
    return the result where the file does not show), the finding is low.
    Where the numerator is at most the guarded value -- `x / (x.norm() + 1e-6)`,
    `x / x.abs().amax().clamp_min(1e-5)`, `(d - d.min()) / (d.max() - d.min()
    + 1e-6)` -- the quotient is at most 1 and cannot overflow; only its
    gradient at the bound (1/1e-6 = 1e6) can, for an all-zero vector: low
    where a gradient flows, not flagged where none does. Likewise a subnormal
    guard inside `log` keeps the value finite (`log(1e-7)` = -16.1): only the
    derivative 1/1e-7 overflows, so it is not flagged where no gradient flows
    (`@torch.inference_mode()`, `torch.no_grad()`, a metric).

    Not flagged: the `eps` of the built-in `LayerNorm`/`GroupNorm`/`RMSNorm`
    modules and functional forms (they accumulate in float32), learning rates,
    tolerances (`allclose`, `assert`), values added to a tensor explicitly cast
    to float32 first (`x.float()`, `.to(torch.float32)`, also inside a private
    helper every call of which passes such a tensor: `self._norm(x.float())`),
    and any literal that
    is not a guard, and guards on values that cannot be float16 (the shared
    dtype facts: a tensor made with an explicit float32/float64 dtype, from
    Python data (`torch.tensor(lengths)`) or numpy, a parameter whose values the
    function hands to numpy (`np.minimum(box2[2], ...)`: augmentation code), an integer tensor, Python
    numbers, a float32 region such as `autocast(enabled=False)`). Active only
    when float16 is a target dtype.

    ## Why is this bad?
    float16 has no number below 5.96e-8: any literal under about 2.98e-8 rounds
    to 0, so `n + 1e-12` *is* `n` and the guard does nothing: `x / (0 + 1e-12)`
    is inf or NaN, `log(0 + 1e-8)` is -inf, `rsqrt(0 + 1e-12)` is inf, and
    `F.normalize` (default eps 1e-12) returns NaN for a zero row. Between
    5.96e-8 and 6.10e-5 the value is subnormal: the forward pass stays finite,
    but `1/v` overflows float16 (max 65504) for every v < 1.53e-5, so the
    quotient or the gradient at 0 is inf (measured: `F.normalize(eps=1e-6)` of
    a zero row has an inf gradient, `eps=1e-4` does not). Under a square root
    a subnormal guard is enough (`sqrt(1e-7)` = 3.4e-4), so `sqrt`/`rsqrt`
    guards are reported only when they round to 0. Adam with `eps=1e-8` on
    float16 parameters turns them inf/NaN in one step: `exp_avg_sq` underflows
    to 0 and `eps` is 0 too.

    ## Example
    ```python
    EPS = 1e-12
    y = x / (x.norm(dim=-1, keepdim=True) + EPS)
    h = (x - mu) / torch.sqrt(var + 1e-12)
    z = F.normalize(x, dim=-1, eps=1e-12)
    ```

    ## Use instead
    ```python
    n = x.norm(dim=-1, keepdim=True)
    y = x / (n + torch.finfo(n.dtype).eps)
    h = (x - mu) / torch.sqrt(var + torch.finfo(var.dtype).eps)
    z = F.normalize(x, dim=-1, eps=1e-4)
    ```

    ## Fix safety
    Unsafe: every fix makes the guard larger, which changes results slightly
    in float32 too. `b + <tiny>` becomes `b + torch.finfo(b.dtype).eps`
    (9.77e-4 in float16) and `clamp(min=<tiny>)` becomes
    `clamp(min=torch.finfo(b.dtype).tiny)` (6.10e-5 in float16), offered only
    when `b` is a plain name or attribute. An `eps=` literal (an argument or a
    parameter default) becomes `1e-4` where it ends in a reciprocal (a normal
    float16 number whose reciprocal, 1e4, is finite) and `1e-6` under a square
    root. A guard given through a module or local constant is reported without
    a fix (the constant may have other uses), and so is one defined in
    another module or a config class.
    """

    code = "NL001"
    float16_only = True
    name = "tiny-epsilon"
    summary = "a stabilising epsilon below the smallest normal float16 (6.10e-5) rounds to 0 or overflows 1/eps"
    fix_applicability = UNSAFE
    # a literal below 6.1e-5: `1e-12`, `1.E-8`, `0.00001`, `10 ** -8`
    # (the lookbehinds let the engine scan for the literals `e-` and `E-` first)
    triggers = (re.compile(r"(?<=[\d.])e-\d|(?<=[\d.])E-\d|\.0000|\*\*\s*\(?-"),)
    # an eps imported from another module of the project
    cross_module = True
    options = {"threshold": 6.1e-5}
    valid = [
        # look-alikes of the in-place guard: a guard that float16 keeps, a name divided before it is added
        Valid("import torch\ndef encode(w, wa):\n    wa += 1e-3\n    return w / wa\nmodel = Net().cuda().half()\n"),
        Valid("import torch\ndef encode(w, wa):\n    wa = wa * 2\n    return w / wa, 1e-8\nmodel = Net().cuda().half()\n"),
        Valid("import torch\nn = torch.tensor(lengths)\nw = total / (n + 1e-8)\n"),
        Valid("ns = [log.get('sample_size', 0) for log in logs]\nntot = sum(ns)\nws = [n / (ntot + 1e-8) for n in ns]\n"),
        Valid(
            "from dataclasses import dataclass\n\n"
            "@dataclass\nclass Config:\n    eps: float = 1e-4\n\n"
            "def f(x, n, config: Config):\n    return x / (n + config.eps)\n"
        ),
        Valid("import torch.nn as nn\nnorm = nn.LayerNorm(768, eps=1e-12)\n"),
        Valid("import torch.nn.functional as F\ny = F.layer_norm(x, (768,), eps=1e-12)\n"),
        Valid("import torch\nopt = torch.optim.Adam(model.parameters(), lr=1e-5, eps=1e-8)\n"),
        Valid("import torch\nassert torch.allclose(a, b, atol=1e-8)\n"),
        Valid("import torch\ny = x / (n + 1e-4)\n"),
        Valid("import torch\nv = x.float()\ny = x * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-12)\n"),
        Valid("import torch\nh = (x - mu) / torch.sqrt(var + 1e-6)\n"),
        Valid("import numpy as np\nratio = np.sum(a) / (np.sum(b) + 1e-12)\n"),
        Valid(
            "import torch.nn as nn\n"
            "class Config:\n"
            "    def __init__(self, layer_norm_eps=1e-12):\n"
            "        self.layer_norm_eps = layer_norm_eps\n"
            "class Block(nn.Module):\n"
            "    def __init__(self, config):\n"
            "        self.ln = nn.LayerNorm(768, eps=config.layer_norm_eps)\n"
        ),
    ]
    invalid = [
        # the guard added in place before the division (a box coder's sizes)
        Invalid(
            "import torch\ndef encode(h, w, ha, wa):\n    wa += 1e-8\n    return torch.log(w / wa)\n"
            "model = Net().cuda().half()\n",
            fixed="import torch\ndef encode(h, w, ha, wa):\n    wa += torch.finfo(wa.dtype).eps\n"
            "    return torch.log(w / wa)\nmodel = Net().cuda().half()\n",
        ),
        Invalid(
            "from dataclasses import dataclass\n\n"
            "@dataclass\nclass Config:\n    eps: float = 1e-8\n\n"
            "def f(x, n, config: Config):\n    return x / (n + config.eps)\n"
        ),
        Invalid(
            "import torch\ny = x / (n + 1e-12)\n",
            fixed="import torch\ny = x / (n + torch.finfo(n.dtype).eps)\n",
        ),
        Invalid(
            "import torch\nh = (x - mu) / torch.sqrt(var + 1e-12)\n",
            fixed="import torch\nh = (x - mu) / torch.sqrt(var + torch.finfo(var.dtype).eps)\n",
        ),
        Invalid(
            "import torch\nloss = -torch.log(p + 1e-8).mean()\n",
            fixed="import torch\nloss = -torch.log(p + torch.finfo(p.dtype).eps).mean()\n",
        ),
        Invalid(
            "import torch\ny = v / n.clamp_min(1e-12)\n",
            fixed="import torch\ny = v / n.clamp_min(torch.finfo(n.dtype).tiny)\n",
        ),
        Invalid(
            "import torch.nn.functional as F\nz = F.normalize(x, dim=-1, eps=1e-12)\n",
            fixed="import torch.nn.functional as F\nz = F.normalize(x, dim=-1, eps=1e-4)\n",
        ),
        Invalid("EPS = 1e-12\n\ndef unit(x):\n    return x / (x.norm(dim=-1, keepdim=True) + EPS)\n"),
        Invalid(
            "import torch\n\ndef rms(x, eps=1e-12):\n    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)\n",
            fixed="import torch\n\ndef rms(x, eps=1e-6):\n    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)\n",
        ),
        Invalid(
            "import torch\nimport torch.nn as nn\n\n"
            "class RMSNorm(nn.Module):\n"
            "    def __init__(self, dim, eps=1e-6):\n"
            "        super().__init__()\n"
            "        self.eps = eps\n\n"
            "    def forward(self, x):\n"
            "        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)\n\n"
            "norm = RMSNorm(512, eps=1e-8)\n",
            fixed="import torch\nimport torch.nn as nn\n\n"
            "class RMSNorm(nn.Module):\n"
            "    def __init__(self, dim, eps=1e-4):\n"
            "        super().__init__()\n"
            "        self.eps = eps\n\n"
            "    def forward(self, x):\n"
            "        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)\n\n"
            "norm = RMSNorm(512, eps=1e-4)\n",
            count=2,
        ),
        Invalid(
            "import torch\nmodel = Net().half()\nopt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)\n",
            fixed="import torch\nmodel = Net().half()\nopt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)\n",
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.threshold = float(self.opts.get("threshold", 6.1e-5))
        self.module_scope = FuncScope(None, None)
        self.scopes: List[FuncScope] = [self.module_scope]
        self.classes: List[ClassInfo] = []
        self.module_funcs: Dict[str, List[FuncScope]] = {}
        self.module_classes: Dict[str, List[ClassInfo]] = {}
        self.class_uses: List[Tuple[ClassInfo, str, Use, Optional[str]]] = []
        self.module_uses: List[Tuple[str, Use, Optional[str], Optional[cst.CSTNode]]] = []
        self.call_sites: List[CallSite] = []
        #: (source of an optimizer's eps, its use, label, the function building the optimizer)
        self.optimizer_uses: List[Tuple[Optional[Source], Use, Optional[str], Optional[cst.FunctionDef]]] = []
        #: optimizers built with their default eps (``Adam(model.parameters())``)
        self.default_optimizers: List[Tuple[cst.Call, str, Optional[cst.FunctionDef]]] = []
        #: the functions (None: module level) that cast a model to float16
        self.half_casts: List[Optional[cst.FunctionDef]] = []
        self.quiet = 0  # inside assert / tolerance calls
        self.quiet_calls: Set[int] = set()
        self.half = False
        self.amp = False
        #: literal -> index of its finding in ``pending``
        self.reported: Dict[int, int] = {}
        self.capped: Set[int] = set()
        #: (literal, message, fix, guarding node, reach, low: the overflow saturates at some calls)
        self.pending: List[Tuple[cst.CSTNode, str, Optional[FixSpec], cst.CSTNode, str, bool]] = []
        #: parameter defaults reported: id(literal) -> (their function, the parameter)
        self.defaults: Dict[int, Tuple[FuncScope, str]] = {}
        self.stack_kinds: List[str] = ["module"]  # module / class / function

    # -- scopes ------------------------------------------------------------------
    @property
    def scope(self) -> FuncScope:
        return self.scopes[-1]

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        info = ClassInfo(node)
        if self.stack_kinds[-1] == "module":
            self.module_classes.setdefault(node.name.value, []).append(info)
        self.classes.append(info)
        self.stack_kinds.append("class")
        # the class body's own names (`eps = 1e-12`) are class attributes
        for stmt in node.body.body if isinstance(node.body, cst.IndentedBlock) else ():
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    target, value = None, None
                    if isinstance(small, cst.Assign) and len(small.targets) == 1:
                        target, value = small.targets[0].target, small.value
                    elif isinstance(small, cst.AnnAssign) and small.value is not None:
                        target, value = small.target, small.value
                    if isinstance(target, cst.Name) and value is not None:
                        info.attrs.setdefault(target.value, []).append(self._source(value))

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.pop()
        self.stack_kinds.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        klass = self.classes[-1] if self.stack_kinds[-1] == "class" else None
        scope = FuncScope(node, klass)
        scope.fp32 = self.scope.fp32 or any(
            re.search(r"opmath|upcast|float32|float64|cast_inputs", self.ctx.code(d.decorator))
            for d in node.decorators
        )
        index = 0
        for param in list(node.params.posonly_params) + list(node.params.params):
            scope.params[param.name.value] = (param, index)
            index += 1
        for param in node.params.kwonly_params:
            scope.params[param.name.value] = (param, -1)
        for name, (param, _) in scope.params.items():
            if isinstance(param.default, (cst.Name, cst.Attribute)):
                # a default is evaluated where the function is defined (this scope is not pushed yet)
                found = self._source(param.default)
                if found is not None:
                    scope.default_sources[name] = found
        if self.stack_kinds[-1] == "module":
            self.module_funcs.setdefault(node.name.value, []).append(scope)
        if klass is not None and node.name.value == "__init__":
            klass.init = scope
        self.scopes.append(scope)
        self.stack_kinds.append("function")

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.pop()
        self.stack_kinds.pop()

    # -- bindings ----------------------------------------------------------------
    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            t, v = target.target, node.value
            if (
                len(node.targets) == 1
                and isinstance(t, (cst.Tuple, cst.List))
                and isinstance(v, (cst.Tuple, cst.List))
                and len(t.elements) == len(v.elements)
                and not any(isinstance(e, cst.StarredElement) for e in (*t.elements, *v.elements))
            ):
                for te, ve in zip(t.elements, v.elements):  # a, b = x.double(), y.double()
                    self._bind(te.value, ve.value)
                continue
            self._bind(t, v if len(node.targets) == 1 else None)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._bind(node.target, node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if isinstance(node.operator, cst.DivideAssign):
            self._divisor(node.value, node)
        self._bind(node.target, None)
        if isinstance(node.operator, cst.AddAssign) and isinstance(node.target, cst.Name) \
                and self.stack_kinds[-1] != "class":
            self.scope.assigns[node.target.value][-1].added = node.value

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target, None)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._bind(node.target, node.value)

    def _bind(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if self.stack_kinds[-1] == "class":
            return  # handled in visit_ClassDef
        if isinstance(target, cst.Name):
            source = self._source(value) if value is not None else None
            self.scope.assigns.setdefault(target.value, []).append(Binding(value, source))
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(element.value, None)
        elif isinstance(target, cst.StarredElement):
            self._bind(target.value, None)
        else:
            attr = _self_attr(target)
            if attr is not None and self.scope.klass is not None:
                source = self._source(value) if value is not None else None
                self.scope.klass.attrs.setdefault(attr, []).append(source)

    def _source(self, value: Optional[cst.BaseExpression], depth: int = 0) -> Optional[Source]:
        """Where a value comes from, as far as cheap to tell."""
        if value is None or depth > 4:
            return None
        if isinstance(value, cst.Float):
            return Source("lit", node=value)
        if isinstance(value, cst.Name):
            name = value.value
            for scope in reversed(self.scopes):
                if scope is self.module_scope:
                    break
                binding = scope.lookup(name)
                if binding is not None:
                    return binding.source
                if name in scope.params:
                    return Source("param", scope=scope, name=name)
            if self.scope is self.module_scope:
                binding = self.module_scope.lookup(name)
                return binding.source if binding is not None else Source("const", node=value)
            return Source("module", name=name, node=value)
        attr = _self_attr(value)
        if attr is not None and self.scope.klass is not None:
            return Source("attr", name=attr, klass=self.scope.klass)
        if isinstance(value, cst.Attribute) and attr is None:
            return Source("const", node=value)  # `consts.EPS`, `config.eps`
        if isinstance(value, cst.IfExp):
            half = self._float16_test(value.test)
            if half is not None:  # `1e-6 if x.dtype == torch.float16 else 1e-12`: float16 takes one branch
                return self._source(value.body if half else value.orelse, depth + 1)
            parts = tuple(s for s in (self._source(value.body, depth + 1), self._source(value.orelse, depth + 1)) if s)
            return Source("any", parts=parts) if parts else None
        if isinstance(value, cst.BooleanOperation) and isinstance(value.operator, cst.Or):
            parts = tuple(s for s in (self._source(value.left, depth + 1), self._source(value.right, depth + 1)) if s)
            return Source("any", parts=parts) if parts else None
        return None

    def _float16_test(self, test: cst.BaseExpression) -> Optional[bool]:
        """For a test of a tensor's dtype against float16 (``x.dtype ==
        torch.float16``, ``is``, ``in (torch.float16, torch.bfloat16)``):
        True when a float16 tensor makes it true, False when it makes it
        false; None for any other test."""
        if not isinstance(test, cst.Comparison) or len(test.comparisons) != 1:
            return None
        target = test.comparisons[0]
        left, right, op = test.left, target.comparator, target.operator
        if not (isinstance(left, cst.Attribute) and left.attr.value == "dtype"):
            left, right = right, left
        if not (isinstance(left, cst.Attribute) and left.attr.value == "dtype"):
            return None
        half = ("torch.float16", "torch.half")
        if isinstance(op, (cst.Equal, cst.Is, cst.NotEqual, cst.IsNot)):
            if self.ctx.resolve(right) not in half:
                return None
            return isinstance(op, (cst.Equal, cst.Is))
        if isinstance(op, (cst.In, cst.NotIn)) and isinstance(right, (cst.Tuple, cst.List, cst.Set)):
            if right is not target.comparator:
                return None  # `torch.float16 in x.dtype` means nothing
            named = [self.ctx.resolve(e.value) for e in right.elements]
            if None in named:
                return None  # a member this reading cannot name
            return any(n in half for n in named) == isinstance(op, cst.In)
        return None

    def _local_value(self, node: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        """The expression a local name was last assigned in this function."""
        if isinstance(node, cst.Name):
            binding = self.scope.lookup(node.value)
            if binding is not None:
                return binding.value
        return None

    # -- detection: calls --------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        fname = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else None
        if fname in TOLERANCE_CALLS:
            self.quiet += 1
            self.quiet_calls.add(id(node))
            return
        qualified, method = self.ctx.callee(node)
        if makes_model_half(self.ctx, node, lambda: self.ctx.facts.scopes.parent):
            self.half = True
            self.half_casts.append(self.scope.node)
        if (qualified or "").endswith(("GradScaler", "autocast")) or fname in ("GradScaler", "autocast"):
            self.amp = True
        if self.quiet:
            return
        op = torch_op(self.ctx, node)
        self._note_cap(node, op)
        if op in DIV_OPS:
            divisor = arg(node, 0 if is_method_call(self.ctx, node) else 1, "other")
            if divisor is not None:
                self._divisor(divisor.value, node)
        elif op in RECIPROCAL_OPS:
            x = self._subject(node)
            if x is not None:
                self._divisor(x, node)
        elif op in LOG_OPS or op in ROOT_OPS:
            x = self._subject(node)
            if x is not None:
                self._under(x, node, op)
        elif op in ("pow", "pow_"):
            exponent = arg(node, 0 if is_method_call(self.ctx, node) else 1, "exponent")
            if exponent is not None and number(exponent.value) in (0.5, -0.5):
                x = self._subject(node)
                if x is not None:
                    self._under(x, node, "sqrt")
        if qualified is not None:
            self._eps_op(node, qualified)
        elif isinstance(func, cst.Name):
            args = [(a, self._source(a.value)) for a in node.args if not a.star]
            if any(s is not None for _, s in args):
                self.call_sites.append(CallSite(func.value, node, args))

    def _note_cap(self, node: cst.Call, op: Optional[str]) -> None:
        """``torch.clamp(q, max=1.0)``, ``q.clamp_max(c)``, ``min(q, 1.0)``: a
        quotient capped from above cannot overflow (``max_norm / (norm + 1e-6)``
        in gradient clipping)."""
        method = is_method_call(self.ctx, node)
        capped: List[cst.BaseExpression] = []
        if op in CLAMP_OPS and arg(node, 1 if method else 2, "max") is not None:
            capped.append(self._subject(node))  # type: ignore[arg-type]
        elif op in ("clamp_max", "clamp_max_", "minimum", "fmin"):
            capped.append(self._subject(node))  # type: ignore[arg-type]
            if not method and len(node.args) > 1:
                capped.append(node.args[1].value)
        elif isinstance(node.func, cst.Name) and node.func.value == "min" and len(node.args) == 2:
            capped.extend(a.value for a in node.args)
        for value in capped:
            if value is None:
                continue
            value = _strip(value, self.ctx)
            candidates = [value]
            if isinstance(value, cst.Name):
                candidates = [b.value for b in self.scope.assigns.get(value.value, ()) if b.value is not None]
            for cand in candidates:
                if isinstance(cand, cst.BinaryOperation) and isinstance(cand.operator, cst.Divide):
                    self.capped.add(id(cand))

    def leave_Call(self, node: cst.Call) -> None:
        if id(node) in self.quiet_calls:
            self.quiet -= 1

    def visit_Assert(self, node: cst.Assert) -> None:
        self.quiet += 1

    def leave_Assert(self, node: cst.Assert) -> None:
        self.quiet -= 1

    def _is_dtype(self, node: cst.BaseExpression, dtypes) -> bool:
        return isinstance(node, (cst.Attribute, cst.Name)) and self.ctx.resolve(node) in dtypes

    def _subject(self, call: cst.Call) -> Optional[cst.BaseExpression]:
        if is_method_call(self.ctx, call):
            return call.func.value  # type: ignore[union-attr]
        first = arg(call, 0, "input")
        return first.value if first is not None else None

    # -- detection: operators ----------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if self.quiet:
            return
        if isinstance(node.operator, cst.Divide):
            if not self._non_tensor(node):
                self._divisor(node.right, node)
        elif isinstance(node.operator, cst.Power) and number(node.right) in (0.5, -0.5):
            self._under(node.left, node, "sqrt")

    def _non_tensor(self, node: cst.CSTNode) -> bool:
        """The expression visibly computes on Python or NumPy numbers."""
        for sub in subtree(node, 400):
            if isinstance(sub, cst.Call):
                func = sub.func
                if isinstance(func, cst.Name) and func.value in NON_TENSOR_BUILTINS:
                    return True
                if isinstance(func, cst.Attribute):
                    head = func.value
                    while isinstance(head, cst.Attribute):
                        head = head.value
                    if isinstance(head, cst.Name) and head.value in NON_TENSOR_HEADS:
                        return True
                    if func.attr.value in NON_TENSOR_METHODS:
                        return True
            elif isinstance(sub, cst.Attribute) and isinstance(sub.value, cst.Name) and sub.value.value in NON_TENSOR_HEADS:
                return True
        return False

    #: whether the file's text cleans anything (``nan_to_num``...), read once
    _cleans: Optional[bool] = None

    def _cleaned(self, where: cst.CSTNode) -> bool:
        """The inf/NaN a failed guard makes is replaced downstream (``nan_to_num``)
        and no gradient flows through it (a Hungarian matcher's cost matrix)."""
        if self._cleans is None:
            self._cleans = bool(_CLEANING_TEXT.search(self.ctx.source))
        if not isinstance(where, cst.BaseExpression) or not self._cleans:
            return False  # the file cleans nothing: skip the flow analysis
        facts = self.ctx.facts
        return not facts.grad_flows(where) and facts.cleaned_downstream(where)

    def _saturates(self, where: cst.CSTNode) -> str:
        """Where the quotient's overflow goes (see ``Facts.overflow_saturates``)."""
        if not isinstance(where, cst.BaseExpression) or not _SATURATING_TEXT.search(self.ctx.source):
            return ""
        return self.ctx.facts.overflow_saturates(where)

    def _divisor(self, divisor: cst.BaseExpression, where: cst.CSTNode, hop: bool = True) -> None:
        if self._cleaned(where):
            return
        d = _strip(divisor, self.ctx)
        terms = additive_terms(d)
        if terms is not None:
            bounded = any(number(t) is None and self._bounded(where, t) for t in terms)
            self._terms(terms, Use("is added to the divisor in", RECIP, where, DIV_ZERO, saturates=self._saturates(where),
                                   bounded=bounded))
            return
        clamp = self._clamp_min(d)
        if clamp is not None:
            bound, subject = clamp
            if subject is not None and self._upcast(subject):
                return
            masked = subject is not None and self._mentions_mask(subject)
            self._term(bound, Use("is the lower bound of the divisor in", RECIP, where, DIV_ZERO, subject=subject,
                                  finfo="tiny", masked=masked, reach=self._reach(subject),
                                  saturates=self._saturates(where),
                                  bounded=subject is not None and self._bounded(where, subject)))
            return
        if hop and isinstance(d, cst.Name):
            binding = self.scope.lookup(d.value)
            if binding is not None and binding.added is not None:
                # `wa += self.eps` before `x / wa`: the guard added in place
                self._terms([d, binding.added], Use("is added in place to the divisor in", RECIP, where, DIV_ZERO,
                                                    saturates=self._saturates(where)))
                return
            value = self._local_value(d)
            if value is not None and not self._non_tensor(value):
                self._divisor(value, where, hop=False)

    def _bounded(self, where: cst.CSTNode, guarded: cst.BaseExpression) -> bool:
        """The quotient's numerator is at most the guarded value (``Facts.at_most``)."""
        return isinstance(where, cst.BinaryOperation) and self.ctx.facts.at_most(where.left, _strip(guarded, self.ctx))

    def _under(self, x: cst.BaseExpression, where: cst.CSTNode, op: str) -> None:
        if self._cleaned(where) or (op in LOG_OPS and isinstance(where, cst.BaseExpression)
                                    and self.ctx.facts.only_ordered(where)):
            return  # inf/NaN replaced, or log(0) = -inf only sorts last
        cls = RECIP if op in LOG_OPS else ROOT
        name = op if op in LOG_OPS or op in ROOT_OPS else "sqrt"
        x = _strip(x, self.ctx)
        if isinstance(x, cst.Name):
            value = self._local_value(x)
            if value is None:
                return
            x = _strip(value, self.ctx)
        zero = ROOT_ZERO.get(name, LOG_ZERO)
        terms = additive_terms(x)
        if terms is not None:
            self._terms(terms, Use(f"is added inside `{name}` in", cls, where, zero))
            return
        clamp = self._clamp_min(x)
        if clamp is not None:
            bound, subject = clamp
            if subject is not None and self._upcast(subject):
                return
            # clamped points get a zero gradient: only a bound that rounds to 0 fails
            self._term(bound, Use(f"is the lower bound of the `{name}` argument in", ROOT, where, zero, subject=subject,
                                  finfo="tiny", reach=self._reach(subject)))

    def _clamp_min(self, node: cst.BaseExpression) -> Optional[Tuple[cst.BaseExpression, Optional[cst.BaseExpression]]]:
        """(lower bound, clamped tensor) of ``x.clamp(min=v)``, ``clamp_min``,
        ``torch.clamp(x, v)``, ``max(x.norm(), v)``."""
        if not isinstance(node, cst.Call):
            return None
        if isinstance(node.func, cst.Name) and node.func.value == "max" and self.ctx.resolve(node.func) is None:
            if len(node.args) == 2 and not any(a.keyword or a.star for a in node.args):
                a, b = node.args[0].value, node.args[1].value
                if isinstance(b, cst.Float) and isinstance(a, cst.Call) and not self._non_tensor(a):
                    return b, None
                if isinstance(a, cst.Float) and isinstance(b, cst.Call) and not self._non_tensor(b):
                    return a, None
            return None
        op = torch_op(self.ctx, node)
        if op is None:
            return None
        method = is_method_call(self.ctx, node)
        if op in CLAMP_OPS:
            bound = arg(node, 0 if method else 1, "min")
        elif op in CLAMP_MIN_OPS:
            bound = arg(node, 0 if method else 1, "min")
        else:
            return None
        if bound is None:
            return None
        return bound.value, self._subject(node)

    # -- terms and their sources -------------------------------------------------
    def _terms(self, terms: Sequence[cst.BaseExpression], use: Use) -> None:
        for i, term in enumerate(terms):
            others = [t for j, t in enumerate(terms) if j != i]
            if not others or all(number(o) is not None for o in others):
                continue
            if isinstance(term, (cst.Float, cst.Name, cst.Attribute)):
                if any(self._upcast(o) for o in others) or all(_scalar_like(o) for o in others):
                    return
                if all(self.ctx.facts.dtype(o) == HOST for o in others):
                    continue  # added to Python numbers: never a float16 tensor
                subject = others[0] if len(others) == 1 else None
                masked = use.cls == RECIP and any(self._mentions_mask(o) for o in others)
                reach = max((self._reach(o) for o in others), key=_REACH_RANK.__getitem__, default=EDGE)
                self._term(term, use.but(subject=subject, finfo="eps", masked=masked, reach=reach))

    def _reach(self, node: Optional[cst.BaseExpression]) -> str:
        """How the guarded value reaches exactly 0 (ordinary inputs, only in a
        model cast to half, or an edge case): see ``Facts.zero_case``."""
        return EDGE if node is None else self.ctx.facts.zero_case(node)

    def _upcast(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """The value was explicitly computed in float32/float64 (``x.float()``,
        ``.to(torch.float32)``, ``dtype=torch.float32``, ``dtype=acc_type``,
        ``torch.tensor(data)``, ``torch.from_numpy``), looking through the
        local names it was computed from (any of their assignments)."""
        facts = self.ctx.facts
        if self.scope.fp32 or facts.dtype(node) in (WIDE, BF16, INTEGER) or facts.in_float32_region(node):
            return True
        return self._derived(node, self._upcast_here, depth, set())

    def _mentions_mask(self, node: cst.BaseExpression) -> bool:
        """The value is computed from a mask (``mask.sum()``,
        ``embed_mask.cumsum(1)``): a count without a gradient."""
        return self._derived(
            node, lambda sub: isinstance(sub, cst.Name) and bool(_MASK_NAME.search(sub.value)), 0, set()
        )

    def _derived(self, node: cst.BaseExpression, test, depth: int, seen: Set[str]) -> bool:
        """``test`` holds for a node of the expression or of what its local
        names were assigned (any assignment, a few hops deep)."""
        if depth > 4:
            return False
        for sub in subtree(node, 400):
            if test(sub):
                return True
            if isinstance(sub, cst.Name) and depth < 4 and sub.value not in seen:
                seen.add(sub.value)
                for binding in self.scope.assigns.get(sub.value, ()):
                    value = binding.value
                    if value is not None and value is not node and self._derived(value, test, depth + 1, seen):
                        return True
        return False

    def _upcast_here(self, sub: cst.CSTNode) -> bool:
        if not isinstance(sub, cst.Call):
            return False
        func = sub.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("float", "double") and not sub.args:
            return True
        qualified = self.ctx.resolve(func) if isinstance(func, (cst.Attribute, cst.Name)) else None
        has_dtype = False
        for a in sub.args:
            if self._is_dtype(a.value, FLOAT32_DTYPES):
                return True
            if a.keyword is not None and a.keyword.value == "dtype":
                has_dtype = True
                if isinstance(a.value, (cst.Name, cst.Attribute)) and _ACC_NAME.search(self.ctx.code(a.value)):
                    return True
        if qualified in ("torch.from_numpy",):
            return True
        if qualified in ("torch.tensor", "torch.as_tensor") and not has_dtype:
            return True  # Python data: the default dtype, float32
        return False

    def _term(self, term: cst.BaseExpression, use: Use) -> None:
        if isinstance(term, cst.Float):
            source: Optional[Source] = Source("lit", node=term)
        else:
            source = self._source(term)
        if source is None:
            return
        if isinstance(term, cst.Float):
            self._resolve(source, use)
        else:
            # no finfo fix through a name
            label = term.value if isinstance(term, cst.Name) else self.ctx.code(term)
            self._resolve(source, use.but(subject=None, finfo="", fixable=False), label)

    def _resolve(self, source: Optional[Source], use: Use, label: Optional[str] = None, depth: int = 0) -> None:
        """Report the tiny literals a source stands for (module names and
        attributes are queued until the whole file has been seen). ``label``
        names the binding the guard was reached through."""
        if source is None or depth > 6:
            return
        if source.kind == "lit":
            self._report_literal(source.node, use, label)  # type: ignore[arg-type]
        elif source.kind == "param":
            scope = source.scope
            assert scope is not None
            scope.guard_params.setdefault(source.name, use)
            param = scope.params[source.name][0]
            if isinstance(param.default, cst.Float):
                self.defaults[id(param.default)] = (scope, source.name)
                self._report_literal(param.default, use.but(fixable=True), label or source.name)
            elif source.name in scope.default_sources:
                # ``eps=EPS``: the constant's value, reported where it is defined
                default = scope.default_sources[source.name]
                if default.kind == "lit":
                    self.defaults[id(default.node)] = (scope, source.name)
                self._resolve(default, use, label or source.name, depth + 1)
        elif source.kind == "module":
            self.module_uses.append((source.name, use, label, source.node))
        elif source.kind == "const":
            const = self.ctx.facts.constant(source.node)
            if const is not None and (const.imported or not isinstance(source.node, cst.Name)):
                self._report_value(source.node, const.value, const.origin, use.but(fixable=False), label)
        elif source.kind == "attr":
            self.class_uses.append((source.klass, source.name, use, label))  # type: ignore[arg-type]
        elif source.kind == "any":
            for part in source.parts:
                self._resolve(part, use, label, depth + 1)

    # -- eps= of torch ops ---------------------------------------------------------
    def _eps_op(self, node: cst.Call, qualified: str) -> None:
        spec = EPS_OPS.get(qualified)
        short = qualified.rsplit(".", 1)[-1]
        if spec is not None:
            index, cls = spec
            eps = arg(node, index, "eps")
            first = arg(node, 0, "input")
            if eps is not None and not (first is not None and self._upcast(first.value)):
                zero = "so a zero row gives NaN" if "normal" in short or "cosine" in short.lower() else LOG_ZERO
                # logit clamps to [eps, 1 - eps]: an ordinary saturated sigmoid reaches 1 - eps = 1
                reach = self._reach(first.value) if short.endswith("logit") and first is not None else EDGE
                use = Use(f"is the `eps` of `{short}`, which computes in the input dtype", cls, node, zero, quote=False,
                          reach=reach)
                self._eps_arg(eps.value, use)
            return
        if qualified in POISSON_OPS:
            log_input = arg(node, None, "log_input")
            if log_input is not None and isinstance(log_input.value, cst.Name) and log_input.value.value == "False":
                eps = arg(node, POISSON_OPS[qualified], "eps")
                if eps is not None:
                    use = Use(f"is the `eps` that `{short}` adds inside `log`", RECIP, node, LOG_ZERO, quote=False)
                    self._eps_arg(eps.value, use)
            return
        module, _, name = qualified.rpartition(".")
        if name in OPTIMIZERS and (module.startswith("torch.optim") or module in ("transformers", "transformers.optimization")):
            eps = arg(node, OPTIMIZERS[name], "eps")
            if eps is not None:
                use = Use(
                    f"is the `eps` of `{name}` in a file that runs the model in half precision (`.half()`/"
                    "`.to(torch.float16)`, no AMP)",
                    RECIP, node, OPTIM_ZERO, quote=False, reach=ORDINARY,
                )
                label = None if isinstance(eps.value, cst.Float) else self.ctx.code(eps.value)
                self.optimizer_uses.append((self._source(eps.value), use, label, self.scope.node))
            elif name in DEFAULT_OPTIMIZER_EPS and not any(a.star for a in node.args):
                self.default_optimizers.append((node, name, self.scope.node))

    def _eps_arg(self, value: cst.BaseExpression, use: Use) -> None:
        if isinstance(value, cst.Float):
            self._report_literal(value, use.but(fixable=True))
        else:
            self._term(value, use)

    # -- end of file -----------------------------------------------------------------
    def leave_Module(self, node: cst.Module) -> None:
        # optimizers, when the model runs in float16 without AMP master weights
        if self.half and not self.amp and not trains_float32_adapters(self.ctx.source):
            for source, use, label, where in self.optimizer_uses:
                use = use.but(fixable=source is not None and source.kind == "lit")
                if not self._casts_in(where):
                    use = use.but(role=use.role.replace("no AMP)", f"no AMP{ELSEWHERE})"), reach=EDGE)
                self._resolve(source, use, label)
            for call, name, where in self.default_optimizers:
                self._report_default_eps(call, name, self._casts_in(where))
        # calls to this file's own functions and classes whose eps is a guard
        for site in self.call_sites:
            self._call_site(site)
        # module-level constants and self.<attr> used as guards (a resolution
        # may queue more: `self.eps = EPS`)
        done: Set[Tuple[int, str]] = set()
        for _ in range(4):
            if not self.module_uses and not self.class_uses:
                break
            module_uses, self.module_uses = self.module_uses, []
            class_uses, self.class_uses = self.class_uses, []
            for name, use, label, node in module_uses:
                bindings = self.module_scope.assigns.get(name, [])
                if len(bindings) == 1 and bindings[0].source is not None:
                    self._resolve(bindings[0].source, use, label or name)
                elif not bindings and node is not None:
                    self._resolve(Source("const", node=node), use, label or name)
            for klass, attr, use, label in class_uses:
                if (id(klass), attr) in done:
                    continue
                done.add((id(klass), attr))
                for source in klass.attrs.get(attr, []):
                    self._resolve(source, use, label or f"self.{attr}")
        pure_half = self.half and not self.amp
        for literal, message, fix, where, reach, low in self.pending:
            if id(where) not in self.capped:
                if reach == HALF_ONLY and pure_half and message.endswith(HALF_ONLY_ZERO):
                    message += HALF_FILE
                surely = reach == ORDINARY or reach == HALF_ONLY and pure_half
                owner = self.defaults.get(id(literal))
                overridden = self._overridden(*owner) if owner is not None else None
                if overridden is not None:
                    message += (f"; every call of `{overridden}` in this file passes its own `{owner[1]}`, so "  # type: ignore[index]
                                f"only callers elsewhere get the default")
                    low = True
                self.report(literal, message, fix, confidence=LOW if low or reach == WEIGHT else HIGH if surely else MEDIUM)

    def _overridden(self, scope: "FuncScope", pname: str) -> Optional[str]:
        """The name of the function (or class, for ``__init__``) whose
        parameter ``pname`` every call in this file passes explicitly; None
        when some call relies on the default, or none is seen."""
        func = scope.node
        if func is None or pname not in scope.params:
            return None
        index = scope.params[pname][1]
        facts = self.ctx.facts
        if scope.klass is not None and func.name.value == "__init__":
            name = scope.klass.node.name.value
            calls = [c for c in facts.calls_named(name) if isinstance(c.func, cst.Name)]
            shift = 1  # ``Norm(dim, eps=...)``: ``self`` is not among the arguments
        else:
            name = func.name.value
            calls = facts.calls_of(func)
            shift = 1 if scope.klass is not None else 0
        if not calls:
            return None
        position = index - shift if index is not None and index - shift >= 0 else None
        for call in calls:
            if any(a.star for a in call.args):
                return None
            if arg(call, position, pname) is None:
                return None
        return name

    def _call_site(self, site: CallSite) -> None:
        funcs = self.module_funcs.get(site.name, [])
        classes = self.module_classes.get(site.name, [])
        if len(funcs) + len(classes) != 1:
            return
        if funcs:
            scope, offset = funcs[0], 0
        else:
            scope, offset = classes[0].init, 1  # type: ignore[assignment]
            if scope is None:
                return
        # self.<attr> uses are resolved at the end: settle them for this class first
        by_index = {index: name for name, (_, index) in scope.params.items() if index >= 0}
        position = offset
        for a, source in site.args:
            if a.keyword is not None:
                pname: Optional[str] = a.keyword.value
            else:
                pname = by_index.get(position)
                position += 1
            if source is None or pname is None:
                continue
            inner = self._guard_param(scope, pname)
            if inner is None:
                continue
            role = f"is passed as `{pname}` to `{site.name}`, where it {inner.role}"
            use = inner.but(role=role, subject=None, finfo="")
            if source.kind == "lit":
                self._report_literal(source.node, use.but(fixable=True))  # type: ignore[arg-type]
            else:
                self._resolve(source, use)

    def _guard_param(self, scope: FuncScope, pname: str) -> Optional[Use]:
        """How a parameter is used as a guard: directly, or (for ``__init__``)
        through ``self.<attr> = <param>`` used as a guard elsewhere in the class."""
        use = scope.guard_params.get(pname)
        if use is not None or scope.klass is None:
            return use
        for klass, attr, attr_use, _ in self.class_uses:
            if klass is scope.klass:
                for source in klass.attrs.get(attr, []):
                    if source is not None and source.kind == "param" and source.name == pname and source.scope is scope:
                        return attr_use
        return None

    # -- reporting ---------------------------------------------------------------------
    def _casts_in(self, func: Optional[cst.FunctionDef]) -> bool:
        """Whether a model is cast to float16 in ``func`` itself (None: at
        module level). Where the cast is in another function (a profiler
        matching a module to a float16 input, an export that saves a half
        copy), whether the optimizer gets float16 parameters is not shown."""
        return any(cast is func for cast in self.half_casts)

    def _report_default_eps(self, call: cst.Call, name: str, same_function: bool = True) -> None:
        """``Adam(model.parameters())`` on half parameters: the eps nobody wrote."""
        default = DEFAULT_OPTIMIZER_EPS[name]
        fix = None
        if call.args:
            last = call.args[-1].value
            fix = FixSpec(UNSAFE, "Pass `eps=1e-4`, the smallest eps that stays a normal float16 guard",
                          replace=[(last, f"{self.ctx.code(last)}, eps=1e-4")])
        self.report(
            call.func,
            f"`{name}` keeps its default `eps` ({fmt(default)}), which rounds to 0 in float16 (below "
            f"{fmt(FLOAT16.zero_below)}), in a file that runs the model in half precision (`.half()`/"
            f"`.to(torch.float16)`, no AMP{'' if same_function else ELSEWHERE}), {OPTIM_ZERO}; pass `eps=1e-4` "
            "or keep float32 master weights (AMP)",
            fix,
            confidence=HIGH if same_function else MEDIUM,
        )

    def _report_literal(self, literal: cst.CSTNode, use: Use, label: Optional[str] = None) -> None:
        if isinstance(literal, cst.Float):
            self._report_value(literal, number(literal), literal.value, use, label)

    def _report_value(self, literal: cst.CSTNode, value: Optional[float], text: str, use: Use,
                      label: Optional[str] = None) -> None:
        """Report a guard's value at ``literal``: the literal itself, or -- for a
        value defined in another module or a config field -- the name that
        brings it here (``text`` then says where it is defined)."""
        if value is None or not 0 < value < self.threshold:
            return
        if (use.cls == ROOT or use.masked) and value >= FLOAT16.zero_below:
            # a subnormal guard is enough under a square root, for a clamped log,
            # and for a mask count (0 / eps = 0, no gradient through the mask)
            return
        overflow_only = use.cls == RECIP and use.zero == DIV_ZERO and value >= FLOAT16.zero_below
        if overflow_only and use.saturates == "all":
            # the bound is not 0, so only the quotient's overflow is at stake, and every
            # use of it saturates to what float32 gives (sigmoid(inf) = 1)
            return
        if use.zero == LOG_ZERO and value >= FLOAT16.zero_below and not self.ctx.facts.grad_flows(use.node):
            # a subnormal guard keeps log finite (log(1e-7) = -16.1): only its
            # derivative 1/eps overflows, and no gradient flows here
            return
        low = overflow_only and use.saturates == "some"
        if overflow_only and use.bounded:
            # |numerator| <= the guarded value: the quotient is at most 1, and only its
            # gradient at the bound (1/eps) can overflow, where a gradient flows at all
            if not self.ctx.facts.grad_flows(use.node):
                return
            low = True
        earlier = self.reported.get(id(literal))
        if earlier is not None and _REACH_RANK[use.reach] <= _REACH_RANK[self.pending[earlier][4]]:
            return  # reported already, as surely
        shown, reciprocal = f"`{text}`", text
        if not isinstance(literal, cst.Float):
            # a value defined elsewhere: the name that brings it, and where from
            shown, reciprocal, label = f"`{self.ctx.code(literal)}` (= {fmt(value)}, from `{text}`)", fmt(value), None
        role = use.role
        if use.quote:
            snippet = _SPACES.sub(" ", self.ctx.code(use.node).strip())
            if len(snippet) > 70:
                snippet = snippet[:67] + "..."
            role = f"{role} `{snippet}`"
        who = f"`{label}`" if label else "it"
        if value < FLOAT16.zero_below:
            message = (
                f"{shown} rounds to 0 in float16 (below {fmt(FLOAT16.zero_below)}), so the guard does "
                f"nothing: {who} {role}, {use.zero}"
            )
        elif value < FLOAT16.recip_overflow:
            message = (
                f"{shown} is subnormal in float16 (smallest normal {fmt(FLOAT16.tiny)}): {who} {role}; "
                f"the guard is not 0, but 1/{reciprocal} = {fmt(1 / value)} overflows float16 "
                f"(max {fmt(FLOAT16.max)}), so where the guarded value reaches the bound a numerator "
                f"above {fmt(FLOAT16.max * value)}, or the gradient, is inf"
            )
        else:
            message = (
                f"{shown} is subnormal in float16 (smallest normal {fmt(FLOAT16.tiny)}): {who} {role}; "
                f"it loses precision, becomes 0 where subnormals are flushed to zero, and "
                f"1/{reciprocal} = {fmt(1 / value)} leaves little headroom below {fmt(FLOAT16.max)}"
            )
        if use.cls == RECIP and use.zero != OPTIM_ZERO or use.cls == ROOT:
            message += {ORDINARY: ORDINARY_ZERO, HALF_ONLY: HALF_ONLY_ZERO, WEIGHT: WEIGHT_ZERO}.get(use.reach, EDGE_ZERO)
        if low and use.bounded:
            message += BOUNDED_QUOTIENT
        elif low:
            message += SATURATED_SOME
        fix = self._fix(literal, use) if isinstance(literal, cst.Float) else None
        entry = (literal, message, fix, use.node, use.reach, low)
        if earlier is not None:
            self.pending[earlier] = entry  # an ordinary zero found by a later use
        else:
            self.reported[id(literal)] = len(self.pending)
            self.pending.append(entry)

    def _fix(self, literal: cst.CSTNode, use: Use) -> Optional[FixSpec]:
        if use.fixable:
            value = SAFE_VALUE[use.cls]
            if float(value) < self.threshold and use.cls == RECIP:
                return None
            reason = (
                f"a normal float16 number whose reciprocal ({fmt(1 / float(value))}) is finite"
                if use.cls == RECIP
                else "a float16 number that does not round to 0"
            )
            return FixSpec(UNSAFE, f"Use {value}: {reason}", replace=[(literal, value)])
        if use.subject is not None and use.finfo and is_reference(use.subject) and not use.subject.lpar:
            torch = self.ctx.torch_name()
            expr = f"{torch}.finfo({self.ctx.code(use.subject)}.dtype).{use.finfo}"
            amount = fmt(FLOAT16.eps if use.finfo == "eps" else FLOAT16.tiny)
            return FixSpec(
                UNSAFE,
                f"Use `{expr}` ({amount} in float16): a guard sized to the tensor's dtype",
                replace=[(literal, expr)],
                imports=("torch",),
            )
        return None
