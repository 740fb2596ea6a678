"""NL105 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import fix_all, lint  # noqa: E402


def test_margin_depends_on_the_target_dtype():
    src = "import torch\ny = torch.acos(x.clamp(-0.999, 0.999))\n"
    assert lint(src, ["NL105"], dtypes=("float16",)) == []
    [f] = lint(src, ["NL105"], dtypes=("bfloat16",))
    assert "bfloat16" in f.message


def test_named_margin_and_reassigned_clamp_are_quiet():
    src = (
        "import torch\n"
        "def f(cos, eps):\n"
        "    return torch.acos(torch.clamp(cos, -1 + eps, 1 - eps))\n"
        "def g(dot):\n"
        "    dot = dot.clamp(-1 + 1e-3, 1 - 1e-3)\n"
        "    return dot.acos()\n"
    )
    assert lint(src, ["NL105"]) == []


def test_fix_keeps_cosine_of_identical_vectors_finite():
    torch = pytest.importorskip("torch")
    src = (
        "import torch\nimport torch.nn.functional as F\n"
        "def angle(a, b):\n"
        "    cos = F.cosine_similarity(a, b, dim=-1)\n"
        "    return torch.acos(cos)\n"
    )
    fixed = fix_all(src, ["NL105"])
    assert fixed != src and lint(fixed, ["NL105"]) == []
    before, after = {}, {}
    exec(compile(src, "<before>", "exec"), before)
    exec(compile(fixed, "<after>", "exec"), after)
    torch.manual_seed(0)
    for dtype in (torch.float16, torch.float32):
        a = torch.randn(256, 16, dtype=dtype)
        results = []
        for ns in (before, after):
            x = a.clone().requires_grad_(True)
            y = ns["angle"](x, a)
            y.sum().backward()
            results.append((y, x.grad))
        (y0, g0), (y1, g1) = results
        assert not (torch.isfinite(y0).all() and torch.isfinite(g0).all())
        assert torch.isfinite(y1).all() and torch.isfinite(g1).all()


SPHERICAL = (
    "import torch\n"
    "class Spherical(torch.nn.Module):\n"
    "    def forward(self, pos, row, col):\n"
    "        cart = pos[row] - pos[col]\n"
    "        rho = torch.norm(cart, p=2, dim=-1).view(-1, 1)\n"
    "        phi = torch.acos(cart[..., 2:3] / rho)\n"
    "        return phi\n"
)


def test_datasets_folder_carries_no_gradient():
    # a dataset prepares samples: no gradient reaches its acos
    assert lint(SPHERICAL, ["NL105"], path="graphs/datasets/spherical.py") == []
    # evaluation code, as a `metrics.py` module is (a pose error, a path length)
    assert lint(SPHERICAL, ["NL105"], path="geometry/metrics/pose.py") == []
    assert lint(SPHERICAL, ["NL105"], path="geometry/metrics.py") == []


def test_the_same_code_in_a_model_or_transforms_folder_is_reported():
    assert [f.line for f in lint(SPHERICAL, ["NL105"], path="graphs/nn/spherical.py")] == [6]
    # a `transforms` folder may hold differentiable geometry (rotation conversions)
    assert [f.line for f in lint(SPHERICAL, ["NL105"], path="graphs/transforms/spherical.py")] == [6]


SLERP = (
    "import torch\n"
    "def normalize(x):\n"
    "    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True))\n"
    "def slerp(a, b, t):\n"
    "    a, b = normalize(a), normalize(b)\n"
    "    d = (a * b).sum(-1, keepdim=True)\n"
    "    return t * torch.acos(d)\n"
)


def test_a_programs_helper_called_only_without_gradient_is_quiet():
    # a metric script: its helpers run only under no_grad, and no module imports a program's helpers
    script = SLERP + (
        "if __name__ == '__main__':\n"
        "    z = torch.randn(8, 512)\n"
        "    with torch.no_grad():\n"
        "        print(slerp(z[::2], z[1::2], 0.5))\n"
    )
    assert lint(script, ["NL105"]) == []
    # the same call with a gradient
    assert [f.line for f in lint(script.replace("    with torch.no_grad():\n        print(", "    print("),
                                 ["NL105"])] == [7]
    # a module's public function, called here under no_grad, may be called elsewhere with one
    module = SLERP + "def metric(z):\n    with torch.no_grad():\n        return slerp(z[::2], z[1::2], 0.5)\n"
    assert [f.line for f in lint(module, ["NL105"])] == [7]


def test_enable_grad_inside_a_no_grad_method_lets_the_gradient_flow():
    # diffedit-style guidance: `__call__` runs under no_grad, a regularising
    # loss inside `with torch.enable_grad():` is differentiated
    cls = (
        "import torch\n\n\nclass Pipe:\n    @torch.no_grad()\n    def __call__(self, a, b):\n"
        "        with torch.enable_grad():\n"
        "            c = (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)\n"
        "            torch.acos(c).sum().backward()\n"
    )
    assert [f.line for f in lint(cls, ["NL105"])] == [9]
    assert lint(cls.replace("torch.enable_grad()", "torch.no_grad()"), ["NL105"]) == []


@pytest.mark.parametrize("base, shown", [
    ("BaseTransform", []),
    ("T.MapTransform", []),
    # look-alikes: a module (a differentiable layer), and a base that names no transform
    ("nn.Module", [8]),
    ("Base", [8]),
])
def test_a_data_transform_class_carries_no_gradient(base, shown):
    # PyG's Spherical transform: polar angles of edge vectors, for a dataset
    src = (
        "import torch\nfrom torch import nn\n\n"
        f"class Spherical({base}):\n"
        "    def forward(self, data):\n"
        "        cart = data.pos[data.col] - data.pos[data.row]\n"
        "        rho = torch.norm(cart, p=2, dim=-1).view(-1, 1)\n"
        "        data.edge_attr = torch.acos(cart[..., 2:3] / rho)\n"
        "        return data\n"
    )
    assert [f.line for f in lint(src, ["NL105"])] == shown


@pytest.mark.parametrize("z1, reported", [
    ("torch.randn(1, 3, 8, 8)", False),
    # look-alike: the endpoint is a parameter being trained
    ("self.latent", True),
])
def test_a_nested_helper_called_with_fresh_draws_carries_no_gradient(z1, reported):
    """ddim's ``slerp`` inside its interpolation method, called with two randn draws."""
    source = (
        "import torch\n"
        "class Runner(torch.nn.Module):\n"
        "    def interpolate(self, n):\n"
        "        def slerp(z1, z2, alpha):\n"
        "            theta = torch.acos(torch.sum(z1 * z2) / (torch.norm(z1) * torch.norm(z2)))\n"
        "            return torch.sin((1 - alpha) * theta) / torch.sin(theta) * z1\n"
        f"        z1 = {z1}\n"
        "        z2 = torch.randn(1, 3, 8, 8)\n"
        "        alpha = torch.arange(0.0, 1.01, 0.1)\n"
        "        return [slerp(z1, z2, alpha[i]) for i in range(n)]\n"
    )
    assert bool(lint(source, ["NL105"])) == reported


@pytest.mark.parametrize("grid, reported", [
    # a grid of constants carries no gradient, whichever output of the unpacking is used
    ("gy, gx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing='ij')", False),
    ("gy, gx = torch.meshgrid([torch.linspace(-1, 1, n), torch.arange(n) / 8.0])", False),
    ("gy, gx = torch.randn(2, n).unbind(0)", False),
    # look-alikes: one input of the grid is learned; a piece of a learned tensor
    ("gy, gx = torch.meshgrid(torch.linspace(-1, 1, n), self.offsets, indexing='ij')", True),
    ("gy, gx = self.angles.chunk(2)", True),
])
def test_what_an_unpacked_grid_or_piece_carries(grid, reported):
    """nvdiffrec's cube map: `gy, gx = torch.meshgrid(torch.linspace(...), ...)`: each output
    holds the values of one input, so a grid of constants carries no gradient."""
    src = ("import torch\n\n\nclass Sphere(torch.nn.Module):\n    def forward(self, n):\n"
           f"        {grid}\n        return torch.acos(torch.clamp(gx, min=-1, max=1))\n")
    assert bool(lint(src, ["NL105"])) == reported


def test_a_helper_called_with_a_constant_grid_carries_no_gradient_at_that_call():
    """nvdiffrec: `v = safe_normalize(cube_to_dir(s, gx, gy))` of a linspace grid; the same
    `safe_normalize` elsewhere normalises learned normals. Each call is read with what it
    passes: the grid's acos is quiet, the learned one's is reported."""
    src = ("import torch\n\n\ndef dot(x, y):\n    return torch.sum(x * y, -1, keepdim=True)\n\n\n"
           "def length(x, eps=1e-20):\n    return torch.sqrt(torch.clamp(dot(x, x), min=eps))\n\n\n"
           "def safe_normalize(x, eps=1e-20):\n    return x / length(x, eps)\n\n\n"
           "def cube_to_dir(s, x, y):\n    if s == 0:\n        rx, ry, rz = torch.ones_like(x), -y, -x\n"
           "    else:\n        rx, ry, rz = -x, -y, -torch.ones_like(x)\n    return torch.stack((rx, ry, rz), dim=-1)\n\n\n"
           "def cubemap(n):\n    gy, gx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing='ij')\n"
           "    v = safe_normalize(cube_to_dir(0, gx, gy))\n    return torch.acos(torch.clamp(v[..., 1:2], min=-1, max=1))\n\n\n"
           "class Shade(torch.nn.Module):\n    def forward(self, normals):\n        v = safe_normalize(self.proj(normals))\n"
           "        return torch.acos(torch.clamp(v[..., 1:2], min=-1, max=1))\n")
    assert [f.line for f in lint(src, ["NL105"])] == [33]
