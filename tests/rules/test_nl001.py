"""NL001's confidence on real-code classes: which probabilities are float16
under autocast, scripts that run in float32, and whose parameters an
optimizer's eps guards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402

HALF_MODEL = "model = Net().cuda().half()\n"


def confidences(source, codes=("NL001",), **kw):
    return [(f.line, f.confidence) for f in lint(source, list(codes), **kw)]


def test_softmax_guard_is_high_only_where_the_file_casts_to_half():
    body = (
        "import torch\n"
        "def entropy(logits):\n"
        "    p = logits.softmax(-1)\n"
        "    return -(p * torch.log(p + 1e-8)).sum(-1)\n"
    )
    # CUDA autocast computes softmax in float32, where 1e-8 is a working guard
    assert confidences(body) == [(4, "medium")]
    [finding] = lint(body, ["NL001"])
    assert "autocast computes softmax and exp in float32" in finding.message
    # in a model cast to half the softmax itself is float16 and underflows to 0
    assert confidences(body + HALF_MODEL) == [(4, "high")]
    # autocast in the same file: float32 softmax again
    assert confidences(body + HALF_MODEL + "with torch.autocast('cuda'):\n    pass\n") == [(4, "medium")]


def test_sigmoid_guard_is_high_but_a_sigmoid_of_a_sum_is_not():
    sigmoid = (
        "import torch\n"
        "def bce(z):\n"
        "    return -torch.log(torch.sigmoid(z) + 1e-10)\n"
    )
    # autocast keeps sigmoid in float16: ordinary logits below -17.3 give 0
    assert confidences(sigmoid) == [(3, "high")]
    of_sum = (
        "import torch\n"
        "def score(a, b):\n"
        "    out = (a * b).sum(dim=-1).view(-1)\n"
        "    return -torch.log(torch.sigmoid(out) + 1e-15)\n"
    )
    # autocast sums in float32, so the sigmoid of the sum is float32 too
    assert confidences(of_sum) == [(4, "medium")]


def test_a_probability_name_counts_only_where_the_code_shows_nothing():
    arithmetic = (
        "import torch\n"
        "def sample(deg_in, deg_out, row, col, e):\n"
        "    prob = (1. / deg_in[row]) + (1. / deg_out[col])\n"
        "    return torch.rand(e).log() / (prob + 1e-10)\n"
    ) + HALF_MODEL
    # a sum of reciprocals is never a probability, whatever its name
    assert confidences(arithmetic) == [(4, "medium")]
    opaque = (
        "import torch\n"
        "def nll(model, x):\n"
        "    prob = model(x)\n"
        "    return -torch.log(prob + 1e-10)\n"
    ) + HALF_MODEL
    assert confidences(opaque) == [(4, "high")]


SCRIPT = (
    "import torch\n"
    "model = torch.nn.Linear(4, 1)\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    "for step in range(10):\n"
    "    z = model(torch.randn(8, 4))\n"
    "    loss = -torch.log(torch.sigmoid(z) + 1e-10).mean()\n"
    "    loss.backward()\n"
    "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
    "    opt.step()\n"
)


def test_a_script_that_shows_no_float16_is_low():
    [finding] = lint(SCRIPT, ["NL001"])
    assert finding.confidence == "low"
    assert "this script shows no float16" in finding.message


def test_torch_accelerator_is_a_device_not_mixed_precision():
    """`torch.accelerator.current_accelerator()` picks a device (pytorch/examples
    does); accelerate's `Accelerator(...)` can turn mixed precision on."""
    device = SCRIPT.replace("model = torch.nn.Linear(4, 1)\n",
                            "device = torch.accelerator.current_accelerator()\nmodel = torch.nn.Linear(4, 1).to(device)\n")
    assert [f.confidence for f in lint(device, ["NL001"])] == ["low"]
    accelerate = SCRIPT.replace("import torch\n", "import torch\nfrom accelerate import Accelerator\n"
                                "accelerator = Accelerator(mixed_precision='fp16')\n".replace("mixed_precision='fp16'", ""))
    assert [f.confidence for f in lint(accelerate, ["NL001"])] == ["high"]


def test_a_script_with_autocast_or_a_half_model_is_not_capped():
    with_amp = SCRIPT.replace("    z = model(", "    with torch.autocast('cuda'):\n        z = model(").replace(
        "    loss = -", "        loss = -")
    assert [f.confidence for f in lint(with_amp, ["NL001"])] == ["high"]
    library = SCRIPT.replace("for step in range(10):", "def train():\n  for step in range(10):").replace(
        "\n    ", "\n      ")
    compile(library, "<library>", "exec")
    assert [f.confidence for f in lint(library, ["NL001"])] == ["high"]


def test_optimizer_eps_needs_the_model_in_half_not_an_input():
    base = (
        "import torch\n"
        "def train(model, batch):\n"
        "    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)\n"
        "    pixels = batch['pixel_values'].to('cuda', torch.float16)\n"
        "    model(pixels).mean().backward()\n"
        "    opt.step()\n"
    )
    # only the input is float16: the optimizer's parameters are not shown to be
    assert lint(base, ["NL001"]) == []
    half = base.replace("    opt = ", "    model = model.half()\n    opt = ")
    assert [f.line for f in lint(half, ["NL001"])] == [4]


def test_peft_adapters_are_float32_for_the_optimizer():
    source = (
        "import torch\n"
        "from peft import get_peft_model\n"
        "from transformers import AutoModelForCausalLM\n"
        "def train(name, config, batch):\n"
        "    model = AutoModelForCausalLM.from_pretrained(name, torch_dtype=torch.float16)\n"
        "    model = get_peft_model(model, config)\n"
        "    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)\n"
        "    model(batch).mean().backward()\n"
        "    opt.step()\n"
    )
    assert lint(source, ["NL001"]) == []
    plain = source.replace("    model = get_peft_model(model, config)\n", "")
    assert [f.line for f in lint(plain, ["NL001"])] == [6]
    # NL004: AdamW bounds its step (low); with SGD, float16 activations and
    # float32 weights are low, as with AMP, and a float16 model is high
    assert [f.confidence for f in lint(source, ["NL004"])] == ["low"]
    sgd = source.replace("torch.optim.AdamW(model.parameters(), lr=5e-5)", "torch.optim.SGD(model.parameters(), lr=0.1)")
    assert [f.confidence for f in lint(sgd, ["NL004"])] == ["low"]
    sgd_plain = sgd.replace("    model = get_peft_model(model, config)\n", "")
    assert [f.confidence for f in lint(sgd_plain, ["NL004"])] == ["high"]


def test_a_model_file_with_a_demo_block_is_not_a_float32_script():
    demo = (
        "import torch\n"
        "def bce(z):\n"
        "    return -torch.log(torch.sigmoid(z) + 1e-10)\n"
        "if __name__ == '__main__':\n"
        "    print(bce(torch.randn(4)))\n"
    )
    # users import bce and run it under autocast: nothing says this file's own run is all there is
    assert [f.confidence for f in lint(demo, ["NL001"])] == ["high"]


INVERSE_SIGMOID = (
    "import torch\n"
    "def inverse_sigmoid(x, eps=1e-5):\n"
    "    x = x.clamp(min=0, max=1)\n"
    "    x1 = x.clamp(min=eps)\n"
    "    x2 = (1 - x).clamp(min=eps)\n"
    "    return torch.log(x1 / x2)\n"
)


def test_an_overflow_that_only_feeds_a_sigmoid_is_not_flagged():
    # 1/1e-5 overflows float16, but sigmoid(inf) = 1 is what float32 gives
    refine = (
        "def refine(delta, ref):\n"
        "    return torch.sigmoid(delta + inverse_sigmoid(ref))\n"
    )
    assert confidences(INVERSE_SIGMOID + refine) == []
    # through a name and an augmented assignment into a slice, then `.sigmoid()`
    sliced = (
        "def refine(head, h, ref):\n"
        "    out = head(h)\n"
        "    logit = inverse_sigmoid(ref)\n"
        "    out[..., :2] += logit\n"
        "    return out[..., :2].sigmoid()\n"
    )
    assert confidences(INVERSE_SIGMOID + sliced) == []


def test_an_overflow_used_otherwise_is_still_flagged():
    # the inf logit is scaled by a tensor (inf * 0 = NaN) or returned unseen
    scaled = (
        "def loss(w, z):\n"
        "    return (inverse_sigmoid(torch.sigmoid(z)) * w).mean()\n"
    )
    assert confidences(INVERSE_SIGMOID + scaled) == [(2, "high")]
    # a saturating call and a call whose result leaves the file's view: low
    mixed = (
        "def refine(delta, ref):\n"
        "    return torch.sigmoid(delta + inverse_sigmoid(ref))\n"
        "def noisy_queries(boxes):\n"
        "    return inverse_sigmoid(boxes.clip(0, 1))\n"
    )
    [finding] = lint(INVERSE_SIGMOID + mixed, ["NL001"])
    assert (finding.line, finding.confidence) == (2, "low")
    assert "at some calls in this file the overflow only reaches a sigmoid" in finding.message
    # a guard that rounds to 0 gives 0/0 = NaN, which no sigmoid saturates
    zero = INVERSE_SIGMOID.replace("1e-5", "1e-10")
    refine = "def refine(delta, z):\n    return torch.sigmoid(delta + inverse_sigmoid(z.sigmoid()))\n"
    assert confidences(zero + refine) == [(2, "high")]


def test_a_private_helper_computes_in_the_dtype_every_caller_passes():
    """Gemma-style RMSNorm: ``_norm`` is called only with ``x.float()``, so its
    eps is added in float32, where 1e-8 is a working guard."""
    def norm(call_a, call_b="self._norm(x.float())", helper="_norm", decorator=""):
        return (
            "import torch\nfrom torch import nn\n"
            "class RMSNorm(nn.Module):\n"
            "    def __init__(self, dim, eps=1e-8):\n"
            "        super().__init__()\n"
            "        self.eps = eps\n"
            "        self.weight = nn.Parameter(torch.ones(dim))\n"
            f"{decorator}"
            f"    def {helper}(self, x):\n"
            "        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-8)\n"
            "    def forward(self, x):\n"
            f"        out = {call_a}\n"
            f"        out = out + {call_b.replace('_norm', helper)}\n"
            "        return (out * self.weight.float()).type_as(x)\n"
            + HALF_MODEL
        )
    assert confidences(norm("self._norm(x.float())")) == []
    assert confidences(norm("self._norm(x.to(torch.float32))")) == []
    assert confidences(norm("self._norm(x=x.float())")) == []
    # one caller passes the activation as it comes: it may be float16
    assert confidences(norm("self._norm(x)")) != []
    # a public method may be called from anywhere with anything
    assert confidences(norm("self.norm(x.float())", helper="norm")) != []
    # a static helper takes no self: its first argument is the tensor
    static = norm("self._norm(x.float())", decorator="    @staticmethod\n").replace("_norm(self, x)", "_norm(x)")
    assert confidences(static) == []
    assert confidences(static.replace("self._norm(x.float())", "self._norm(x)", 1)) != []


def test_a_quotient_bounded_by_its_divisor_cannot_overflow_forward():
    """``x / (x.norm() + 1e-6)``: the guard is subnormal, not 0, and the quotient
    is at most 1; only its gradient at the bound (1/eps) can overflow."""
    cases = {
        "x / (x.norm(dim=-1, keepdim=True) + 1e-6)": "low",
        "x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)": "low",
        "x / (x.abs().amax(dim=-1, keepdim=True) + 1e-5)": "low",
        "x[..., :1] / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + 1e-6)": "low",
        "(x - x.min()) / (x.max() - x.min() + 1e-6)": "low",
        # look-alikes: another tensor's norm, a signed maximum, a sum of squares
        "x / (y.norm(dim=-1, keepdim=True) + 1e-6)": "medium",
        "x / (x.amax(dim=-1, keepdim=True) + 1e-6)": "medium",
        "(x - x.min()) / (y.max() - x.min() + 1e-6)": "medium",
        "x / (x.pow(2).sum(-1, keepdim=True) + 1e-6)": "medium",
    }
    for expr, confidence in cases.items():
        body = f"import torch\ndef f(x, y):\n    return {expr}\n"
        assert confidences(body) == [(3, confidence)], expr
        # where no gradient flows, the forward quotient is all there is
        quiet = f"import torch\n@torch.no_grad()\ndef f(x, y):\n    return {expr}\n"
        assert (confidences(quiet) == []) == (confidence == "low"), expr
    [finding] = lint("import torch\ndef f(x):\n    return x / (x.norm() + 1e-6)\n", ["NL001"])
    assert "the quotient is at most 1" in finding.message


def test_an_element_of_a_list_of_tensors_is_a_tensor():
    """A list is a Python object, but indexing a list of activations gives an
    activation; indexing a list of numbers gives a number."""
    def body(items):
        return (
            "import torch\n"
            "def f(hs, x):\n"
            f"    parts = {items}\n"
            "    return x / (parts[0] + 1e-8)\n"
            + HALF_MODEL
        )
    assert confidences(body("[h.sum(-1, keepdim=True) for h in hs]")) != []
    assert confidences(body("[hs[0].sum(-1, keepdim=True), hs[1].sum(-1, keepdim=True)]")) != []
    assert confidences(body("[1.0, 2.0]")) == []
    assert confidences(body("[float(h) for h in hs]")) == []


def test_a_learned_parameter_reaches_the_bound_only_far_from_its_init():
    """Snake activations: ``1 / (alpha + 1e-9)`` with ``alpha`` a parameter or
    ``exp`` of one is 0 only for a trained weight below -17: low, not medium."""
    def snake(init, alpha):
        return (
            "import torch\nfrom torch import nn\n"
            "class Snake(nn.Module):\n"
            "    def __init__(self, dim):\n"
            "        super().__init__()\n"
            f"        self.alpha = {init}\n"
            "    def forward(self, x):\n"
            f"        alpha = {alpha}\n"
            "        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)\n"
        )
    assert confidences(snake("nn.Parameter(torch.zeros(dim))", "self.alpha.exp()")) == [(9, "low")]
    assert confidences(snake("nn.Parameter(torch.ones(dim))", "self.alpha")) == [(9, "low")]
    [finding] = lint(snake("nn.Parameter(torch.zeros(dim))", "torch.exp(self.alpha)"), ["NL001"])
    assert "learned parameter" in finding.message
    # look-alikes: a layer's output, and the exp of an activation
    assert confidences(snake("nn.Linear(dim, dim)", "self.alpha(x)")) == [(9, "medium")]
    assert confidences(snake("nn.Parameter(torch.zeros(dim))", "x.mean(-1, keepdim=True).exp()")) == [(9, "medium")]


def test_a_subnormal_log_guard_without_a_gradient():
    """``log(p + 1e-7)`` is finite in float16 (log(1e-7) = -16.1): only the
    derivative 1/1e-7 overflows, so where no gradient flows it is no hazard;
    a guard that rounds to 0 gives -inf in the forward pass either way."""
    def found(deco, eps):
        return lint("import torch\n"
                    f"{deco}\n"
                    "def entropy(logits):\n"
                    "    p = torch.softmax(logits, -1)\n"
                    f"    return -(p * torch.log(p + {eps})).sum(-1)\n", ["NL001"])
    assert found("@torch.inference_mode()", "1e-7") == []
    assert found("@torch.no_grad()", "1e-6") == []
    assert [f.line for f in found("", "1e-7")] == [5]
    assert [f.line for f in found("@torch.no_grad()", "1e-10")] == [5]


def test_a_function_computing_with_numpy_takes_arrays():
    """Values a function hands to numpy (``np.minimum(b1_x2, b2_x2)``, and
    what it computes with them) are arrays of augmentation code, never
    float16 activations; ``np.prod(x.shape)`` or ``np.asarray(t)`` say
    nothing of a tensor's values."""
    def found(first):
        return lint("import numpy as np\n"
                    "def ioa(box1, box2):\n"
                    "    b1_x2, b2_x2 = box1[2], box2[2]\n"
                    "    w2 = box2[2] - box2[0]\n"
                    f"    {first}\n"
                    "    return inter / (w2 * (box2[3] - box2[1]) + 1e-16)\n", ["NL001"])
    assert found("inter = np.minimum(b1_x2, b2_x2)") == []
    assert found("inter = np.maximum(w2 / 2, 0)") == []
    assert [f.line for f in found("inter = np.prod(box2.shape)")] == [6]
    assert [f.line for f in found("inter = np.asarray(box2)")] == [6]
    assert [f.line for f in found("inter = box2[0] * np.pi")] == [6]


def test_a_default_every_call_in_the_file_overrides_is_low():
    """``def normalize(t, eps=1e-12)`` whose every call here passes its own
    eps (a normal float16 value): only callers elsewhere get the default.
    One call that keeps the default leaves the finding as it was."""
    def confidence(calls):
        src = ("import torch\n"
               "import torch.nn.functional as F\n"
               "def normalize(t, eps=1e-12):\n"
               "    return F.normalize(t, dim=-1, eps=eps)\n"
               "class Norm(torch.nn.Module):\n"
               "    def __init__(self, dim, eps=1e-8):\n"
               "        super().__init__()\n"
               "        self.eps = eps\n"
               "    def forward(self, x):\n"
               "        return x / (x.abs().sum(-1, keepdim=True) + self.eps)\n"
               f"def use(x):\n    return {calls}\n")
        return {f.line: f.confidence for f in lint(src, ["NL001"])}
    both = confidence("normalize(x, eps=1e-4), normalize(x, 1e-4), Norm(8, eps=1e-4), Norm(8, 1e-4)")
    assert both == {3: "low", 6: "low"}
    kept = confidence("normalize(x, eps=1e-4), normalize(x), Norm(8, eps=1e-4), Norm(8)")
    assert kept[3] != "low" and kept[6] != "low"


def test_optimizer_eps_is_high_only_where_the_same_function_casts_the_model():
    same = (
        "import torch\n"
        "def build(model, lr):\n"
        "    model = model.half()\n"
        "    return torch.optim.Adam(model.parameters(), lr=lr), torch.optim.AdamW(model.parameters(), eps=1e-8)\n"
    )
    assert confidences(same) == [(4, "high"), (4, "high")]
    # a profiler matches a module to its float16 input; the optimizer is built elsewhere
    elsewhere = (
        "import torch\n"
        "def profile(x, ops):\n"
        "    for m in ops:\n"
        "        m = m.half() if x.dtype is torch.float16 else m\n"
        "        print(sum(p.numel() for p in m.parameters()), m(x))\n"
        "def build(model, lr):\n"
        "    return torch.optim.Adam(model.parameters(), lr=lr), torch.optim.AdamW(model.parameters(), eps=1e-8)\n"
    )
    found = lint(elsewhere, ["NL001"])
    assert [(f.line, f.confidence) for f in found] == [(7, "medium"), (7, "medium")]
    assert all("the cast is in another function" in f.message for f in found)
    # a script's module-level cast and module-level optimizer
    script = "import torch\nmodel = Net().half()\nopt = torch.optim.Adam(model.parameters(), lr=1e-3)\n"
    assert confidences(script) == [(3, "high")]


def test_an_eps_chosen_by_a_float16_test_is_judged_by_the_float16_branch():
    source = (
        "import torch\n"
        "import torch.nn.functional as F\n"
        "def head(x):\n"
        "    eps = 1e-4 if x.dtype == torch.float16 else 1e-12\n"
        "    a = F.normalize(x, dim=-1, eps=eps)\n"
        "    eps = 1e-12 if x.dtype is not torch.half else 1e-4\n"
        "    b = F.normalize(x, dim=-1, eps=eps)\n"
        "    eps = 1e-12 if x.dtype in (torch.float16, torch.bfloat16) else 1e-4\n"
        "    c = F.normalize(x, dim=-1, eps=eps)\n"
        "    eps = 1e-12 if x.dtype == torch.float32 else 1e-4\n"
        "    d = F.normalize(x, dim=-1, eps=eps)\n"
        "    return a, b, c, d\n"
    )
    # float16 takes 1e-4 on lines 4 and 6; 1e-12 on line 8; a float32 test says nothing of float16
    assert [f.line for f in lint(source, ["NL001"])] == [8, 10]


@pytest.mark.parametrize("imports, confidence", [
    ("import jax.numpy as jnp\nfrom torch.utils.tensorboard import SummaryWriter\n", "low"),
    ("import flax.linen as nn\n", "low"),
    # look-alikes: torch itself is imported beside jax; no jax at all
    ("import jax\nimport torch\n", "medium"),
    ("import jax.numpy as jnp\nfrom torch import nn\n", "medium"),
    ("import torch\n", "medium"),
])
def test_jax_code_is_not_judged_as_torch(imports, confidence):
    # cleanrl's JAX agents: `(adv - adv.mean()) / (adv.std() + 1e-8)` on JAX arrays
    src = imports + "def loss(adv):\n    return (adv - adv.mean()) / (adv.std() + 1e-8)\n"
    found = lint(src, ["NL001"])
    assert [f.confidence for f in found] == [confidence]
    assert ("JAX" in found[0].message) == (confidence == "low")


@pytest.mark.parametrize("unpack, quiet", [
    # the parts of a float32 tensor are float32
    ("std, mean = torch.std_mean(a, unbiased=False)", True),
    ("std, mean = torch.var_mean(a)", True),
    ("std, _ = a.float().chunk(2)", True),
    ("std, idx = a.max(-1)", True),
    # look-alikes: the parts of an activation, the indices of a max, a helper of unknown dtype
    ("std, mean = torch.std_mean(x, unbiased=False)", False),
    ("_, std = a.max(-1)", True),  # integer indices: no float16 divisor at all
    ("std, mean = stats(a)", False),
])
def test_parts_unpacked_from_a_tensor_have_its_dtype(unpack, quiet):
    source = (
        "import torch\n"
        "def f(x, rows):\n"
        "    a = torch.as_tensor(rows, dtype=torch.float)\n"
        f"    {unpack}\n"
        "    return x / (std + 1e-8)\n"
        + HALF_MODEL
    )
    found = confidences(source)
    assert (found == []) is quiet, found


def test_a_default_named_by_a_module_constant_is_the_constants_value():
    """``EPS = 1e-8`` then ``def __init__(self, eps=EPS): self.eps = eps``
    and ``ha += self.eps; ... / ha`` (a box coder): the default is the
    constant's value, reported where the constant is defined. A constant
    float16 can hold, or a default every call here overrides, is not the
    same finding."""
    def found(value, calls=""):
        src = ("import torch\n"
               f"EPS = {value}\n"
               "class Coder:\n"
               "    def __init__(self, eps: float = EPS):\n"
               "        self.eps = eps\n"
               "    def encode(self, h, ha):\n"
               "        ha += self.eps\n"
               "        return torch.log(h / ha)\n"
               "def normalize(x, eps=EPS):\n"
               "    return x / (x.norm(dim=-1, keepdim=True) + eps)\n"
               f"{calls}")
        return {(f.line, f.column): f.confidence for f in lint(src, ["NL001"])}
    tiny = found("1e-8")
    assert list(tiny) == [(2, 7)]  # one finding, at the constant
    assert found("1e-4") == {}
    overridden = found("1e-8", "def use(x, h, a):\n"
                               "    return normalize(x, eps=1e-4), Coder(eps=1e-4).encode(h, a)\n")
    assert overridden == {(2, 7): "low"}
    # a default that is not a number (a function, a dtype) is no guard
    src = ("import torch\nDT = torch.float32\n"
           "def f(x, dtype=DT):\n    return x / (x.sum() + dtype)\n")
    assert lint(src, ["NL001"]) == []
