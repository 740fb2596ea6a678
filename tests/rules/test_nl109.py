"""NL109 beyond its documented examples: the double-where fix really gives
finite gradients (measured with torch when it is installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import fix_all, lint  # noqa: E402

# (source defining f(x), inputs including the masked singular points)
GRAD_CASES = [
    ("import torch\ndef f(x):\n    return torch.where(x > 0, torch.sqrt(x), 0)\n", [0.0, -1.0, 4.0, 0.25]),
    ("import torch\ndef f(x):\n    return torch.where(x > 0, x * x.log(), 0.0)\n", [0.0, 0.5, 2.0]),
    ("import torch\ndef f(x):\n    return torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)\n", [0.0, 1.0, -2.0]),
    ("import torch\ndef f(c):\n    return torch.where(c.abs() < 1, torch.acos(c), torch.zeros_like(c))\n", [1.0, -1.0, 0.5, 1.5]),
    ("import torch\ndef f(v):\n    return torch.where(v <= 0, torch.zeros_like(v), torch.rsqrt(v))\n", [0.0, -3.0, 4.0]),
    ("import torch\ndef f(t):\n    return torch.where(t > 0, t ** 0.5, 0)\n", [0.0, 9.0]),
]


@pytest.mark.parametrize("source, values", GRAD_CASES)
@pytest.mark.parametrize("dtype_name", ["float16", "float32"])
def test_double_where_fix_has_finite_gradients(source, values, dtype_name):
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    [finding] = lint(source, ["NL109"])
    assert finding.fix is not None and finding.fix.applicability == "safe"
    fixed = fix_all(source, ["NL109"])
    assert fixed != source and lint(fixed, ["NL109"]) == []
    before, after = {}, {}
    exec(compile(source, "<before>", "exec"), before)
    exec(compile(fixed, "<after>", "exec"), after)

    def run(ns):
        x = torch.tensor(values, dtype=dtype, requires_grad=True)
        y = ns["f"](x)
        y.sum().backward()
        return y.detach(), x.grad

    y0, g0 = run(before)
    y1, g1 = run(after)
    assert torch.equal(y0, y1)  # the forward value is unchanged
    assert not torch.isfinite(g0).all()  # the hazard is real
    assert torch.isfinite(g1).all()  # and the fix removes it
    finite = torch.isfinite(g0)
    assert torch.equal(g0[finite], g1[finite])  # selected lanes keep their gradient


def test_cond_that_does_not_guard_the_singular_point_is_quiet():
    src = (
        "import torch\n"
        "def sample(u, eps):\n"
        "    return torch.where(u >= 1.0 - eps, -eps, torch.log(u))\n"
        "def smooth_l1(loss, beta):\n"
        "    return torch.where(loss < beta, 0.5 * loss ** 2 / beta, loss - 0.5 * beta)\n"
    )
    assert lint(src, ["NL109"]) == []


def test_counts_without_gradient_are_quiet():
    src = (
        "import torch\n"
        "def stability(logits, d):\n"
        "    area_i = torch.sum(logits > d, dim=-1).float()\n"
        "    area_u = torch.sum(logits > -d, dim=-1).float()\n"
        "    return torch.where(area_u > 0, area_i / area_u, 1.0)\n"
    )
    assert lint(src, ["NL109"]) == []


def test_no_fix_when_the_condition_has_side_effects_or_no_line():
    [f] = lint("import torch\ny = torch.where((x > 0) & self.valid(x), torch.log(x), 0)\n", ["NL109"])
    assert f.fix is None  # the condition would be evaluated twice
    [f] = lint("import torch\ny = torch.where(x > 0, torch.log(x), 0); z = 1\n", ["NL109"])
    assert f.fix is None
    [f] = lint("import torch\ny = torch.where(self.f(x) > 0, torch.log(self.f(x)), 0)\n", ["NL109"])
    assert f.fix is None  # the operand is a call


def test_fix_name_does_not_collide():
    src = "import torch\nx_safe = 3\ny = torch.where(x > 0, x.log(), 0)\n"
    fixed = fix_all(src, ["NL109"])
    assert "x_safe2 = torch.where(x > 0, x, 1)" in fixed


CUSTOM_FUNCTION = """import torch
from torch.autograd import Function


class SafeDiv(BASE):
    @staticmethod
    def forward(ctx, a, n):
        ctx.save_for_backward(a, n)
        return torch.where(n != 0, a / n, 0)

    @staticmethod
    def backward(ctx, grad):
        a, n = ctx.saved_tensors
        return torch.where(n != 0, grad / n, 0), None
"""


@pytest.mark.parametrize("base, reported", [
    # autograd runs a Function's forward without a graph and calls its backward
    ("torch.autograd.Function", False),
    ("Function", False),
    # look-alikes: a module's forward is differentiated through the where
    ("torch.nn.Module", True),
    ("object", True),
])
def test_forward_of_a_custom_autograd_function_is_not_differentiated(base, reported):
    src = CUSTOM_FUNCTION.replace("BASE", base)
    lines = [f.line for f in lint(src, ["NL109"])]
    assert lines == ([9, 14] if reported else []), lines


PROJECT_HELPER = (
    "import torch\n"
    "class Layer(torch.nn.Module):\n"
    "    def _project(self, q, eps=1e-5):\n"
    "        n = torch.norm(q, dim=-1, keepdim=True)\n"
    "        return torch.where(n <= eps, q, q / n)\n"
    "    def forward(self, x):\n"
    "        with torch.no_grad():\n"
    "            self.weight.copy_(self._project(self.weight))\n"
    "        return x @ self.weight\n"
)


def test_private_helper_called_only_without_grad_is_quiet():
    assert lint(PROJECT_HELPER, ["NL109"]) == []


def test_private_helper_also_called_with_grad_is_reported():
    source = PROJECT_HELPER.replace("        return x @ self.weight\n", "        return x @ self._project(self.weight)\n")
    assert [f.line for f in lint(source, ["NL109"])] == [5]


def test_public_helper_may_be_called_from_elsewhere():
    source = PROJECT_HELPER.replace("_project", "project")
    assert [f.line for f in lint(source, ["NL109"])] == [5]


OTSU = (
    "import torch\n"
    "def threshold(hist, edges, bins):\n"
    "    w = torch.cumsum(hist, dim=1)[:, :-1]\n"
    "    s = torch.cumsum(hist * bins, dim=1)[:, :-1]\n"
    "    mean = torch.where(w > 0, s / w, torch.tensor(0.0))\n"
    "    var = w * (mean - mean.mean()) ** 2\n"
    "    t = torch.argmax(var, dim=1)\n"
    "    best = var.gather(1, t[:, None]).squeeze(1)\n"
    "    return torch.where(best > 0, edges[t + 1], torch.tensor(0.0))\n"
)


def test_a_value_read_only_by_argmax_and_comparisons_carries_no_gradient():
    # the between-class variance picks an index and is compared with 0: nothing to differentiate
    assert lint(OTSU, ["NL109"]) == []


def test_the_same_value_returned_carries_its_gradient():
    returned = OTSU.replace("    return torch.where(best > 0, edges[t + 1], torch.tensor(0.0))\n", "    return best\n")
    assert [f.line for f in lint(returned, ["NL109"])] == [5]


DEGREE = (
    "import torch\n"
    "def laplacian(verts, edges):\n"
    "    V = verts.shape[0]\n"
    "    e0, e1 = edges.unbind(1)\n"
    "    idx = torch.cat([torch.stack([e0, e1], dim=1), torch.stack([e1, e0], dim=1)], dim=0).t()\n"
    "    A = torch.sparse_coo_tensor(idx, WEIGHTS, (V, V), dtype=torch.float32)\n"
    "    deg = torch.sparse.sum(A, dim=1).to_dense()[e0]\n"
    "    return torch.where(deg > 0.0, torch.reciprocal(deg), deg)\n"
)


def test_a_degree_counted_from_constant_ones_carries_no_gradient():
    # the edge indices only place the ones: a count has no gradient, whatever the edges are
    ones = DEGREE.replace("WEIGHTS", "torch.ones(idx.shape[1], device=verts.device)")
    assert lint(ones, ["NL109"]) == []
    scattered = (
        "import torch\n"
        "def mean_over(x, index, n):\n"
        "    count = torch.zeros(n).scatter_add(0, index, torch.ones(index.size(0)))\n"
        "    return torch.where(count > 0, 1 / count, 0.0)\n"
    )
    assert lint(scattered, ["NL109"]) == []


def test_a_degree_weighted_by_a_tensor_with_a_gradient_is_reported():
    weighted = DEGREE.replace("def laplacian(verts, edges)", "def laplacian(verts, edges, w)").replace("WEIGHTS", "w")
    assert [f.line for f in lint(weighted, ["NL109"])] == [8]
    scattered = (
        "import torch\n"
        "def mean_over(x, index, n, w):\n"
        "    count = torch.zeros(n).scatter_add(0, index, w)\n"
        "    return torch.where(count > 0, 1 / count, 0.0)\n"
    )
    assert [f.line for f in lint(scattered, ["NL109"])] == [4]


@pytest.mark.parametrize("decorator, reported", [
    ("@register_decomposition(aten.special_entr)", False),
    ("@decomp.register_decomposition([aten.sinc])", False),
    ("@register_lowering(aten.sinc)", False),
    ("@_make_elementwise_unary_reference(KIND.DEFAULT)", False),
    # a distribution's support: bounds that validation only compares
    ("@constraints.dependent_property(is_discrete=False, event_dim=0)", False),
    # look-alikes: an ordinary decorator, a registry of modules
    ("@functools.lru_cache()", True),
    ("@register_module('sinc')", True),
])
def test_an_ops_decomposition_is_differentiated_by_the_ops_own_formula(decorator, reported):
    source = (
        "import functools\nimport torch\n"
        f"{decorator}\n"
        "def sinc(a):\n"
        "    return torch.where(a == 0, torch.ones_like(a), torch.sin(a) / a)\n"
    )
    assert bool(lint(source, ["NL109"])) == reported


def test_a_helper_that_returns_a_fresh_tensor_carries_no_gradient():
    """``count = _participation(...)`` builds ``torch.tensor(...)`` and
    all-reduces it: a where over its reciprocal has no gradient to poison;
    a helper that returns an activation still does."""
    def found(ret):
        return lint(
            "import torch\nimport torch.distributed as dist\n"
            "def _participation(flag, group):\n"
            "    t = torch.tensor(1.0 if flag else 0.0, device='cuda')\n"
            "    dist.all_reduce(t, group=group)\n"
            f"    return {ret}\n"
            "def scale(flag, group, n, w):\n"
            "    p = _participation(flag, group)\n"
            "    return torch.where(p > 0, n * p.reciprocal(), torch.ones_like(p))\n",
            ["NL109"],
        )
    assert found("t") == []
    assert [f.line for f in found("t * w")] == [9]


SINC = (
    "import math\nimport torch\n"
    "def _sinc(t):\n"
    "    return torch.where(t == 0, torch.tensor(1.0), torch.sin(t) / t)\n"
    "def kernel(zeros):\n"
    "    \"\"\"A windowed _sinc kernel (its docstring names the helper: not a use).\"\"\"\n"
    "    t = torch.linspace(-zeros + 0.5, zeros - 0.5, 2 * zeros)\n"
    "    t *= math.pi\n"
    "    return _sinc(t) * torch.hann_window(2 * zeros)\n"
    "def window(n):\n"
    "    return _sinc(torch.arange(n) * math.pi)\n"
)


@pytest.mark.parametrize("extra, reported", [
    ("", False),
    # look-alikes: one caller passes the layer's input, which carries a gradient; a caller
    # passes the helper on as a callback, so its calls are not all seen
    ("def layer(x):\n    return _sinc(x)\n", True),
    ("def table(xs):\n    return list(map(_sinc, xs))\n", True),
])
def test_a_helper_every_caller_gives_a_value_without_gradient_is_quiet(extra, reported):
    """denoiser's ``sinc(t)``: each caller builds ``t`` with linspace/arange, so the
    masked lanes of the where never meet a backward pass."""
    assert bool(lint(SINC + extra, ["NL109"])) == reported


@pytest.mark.parametrize("test, branch", [
    ("'sinc' in dir(torch)", "else"),
    ("hasattr(torch, 'sinc')", "else"),
    ("not hasattr(torch, 'sinc')", "if"),
])
def test_a_fallback_for_an_older_torch_is_low(test, branch):
    # alias-free resampling code (BigVGAN and the vocoders that copy it) defines its own sinc
    # only where torch lacks one: current torch has it, so the branch does not run
    body = (
        "    def sinc(x):\n"
        "        return torch.where(x == 0, torch.ones_like(x), torch.sin(math.pi * x) / math.pi / x)\n"
    )
    other = "    sinc = torch.sinc\n"
    if branch == "else":
        src = f"import math\nimport torch\nif {test}:\n{other}else:\n{body}"
    else:
        src = f"import math\nimport torch\nif {test}:\n{body}else:\n{other}"
    [finding] = lint(src, ["NL109"])
    assert finding.confidence == "low" and "fallback for a torch without `sinc`" in finding.message
    # the same function outside such a branch keeps its confidence
    [plain] = lint("import math\nimport torch\n" + body.replace("    ", "", 1).replace("\n        ", "\n    "), ["NL109"])
    assert plain.confidence == "high"
