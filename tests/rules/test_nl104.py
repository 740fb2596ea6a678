"""NL104 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import fix_all, lint  # noqa: E402


def test_too_small_eps_is_nl001s_not_nl104s():
    src = "import torch\ndef norm(x):\n    return torch.sqrt((x ** 2).sum(-1) + 1e-12)\n"
    assert {f.code for f in lint(src)} == {"NL001"}
    src = "import torch\ndef norm(x):\n    return torch.sqrt((x ** 2).sum(-1))\n"
    assert {f.code for f in lint(src)} == {"NL104"}


def test_where_guarded_sqrt_is_nl109s():
    src = "import torch\ndef d(x):\n    s = (x ** 2).sum(-1)\n    return torch.where(s > 0, s.sqrt(), 0)\n"
    assert {f.code for f in lint(src)} == {"NL109"}


def test_scalar_reads_and_fresh_tensors_are_quiet():
    src = (
        "import torch\n"
        "def energy(w):\n"
        "    return torch.sqrt(torch.mean(w * w)).item()\n"
        "def rotations(n):\n"
        "    q = torch.randn(n, 4)\n"
        "    return q / torch.sqrt((q * q).sum(dim=1, keepdim=True))\n"
        "def denominator(noise):\n"
        "    sigma = self.sigma_data\n"
        "    return torch.sqrt(noise * noise + sigma * sigma)\n"
    )
    assert lint(src, ["NL104"]) == []


EARLY_STOP = (
    "import torch\n"
    "class Model(torch.nn.Module):\n"
    "    def tolerance_reached(self, prev_pos, next_pos, mask, eps=1e-8) -> bool:\n"
    "        def distances(points):\n"
    "            d = points[..., None, :] - points[..., None, :, :]\n"
    "            return torch.sqrt(torch.sum(d ** 2, dim=-1))\n"
    "        if self.tolerance < 0:\n"
    "            return False\n"
    "        sq_diff = (distances(prev_pos) - distances(next_pos)) ** 2\n"
    "        diff = torch.sqrt(masked_mean(mask, sq_diff) + eps).item()\n"
    "        print(diff)\n"
    "        return diff <= self.tolerance\n"
)


@pytest.mark.parametrize("change, reported", [
    ("", False),
    # look-alikes: the function hands a tensor out (returned, stored, appended), or differentiates inside
    ("        return diff <= self.tolerance\n", True, ),
    ("        print(diff)\n", True),
    ("        diff = torch.sqrt(masked_mean(mask, sq_diff) + eps).item()\n", True),
])
def test_a_function_whose_results_are_python_numbers_passes_no_gradient_out(change, reported):
    """openfold's early-stop test: the all-pairs distances feed only a Python
    number compared with a tolerance, so no gradient leaves the function."""
    src = EARLY_STOP
    if change:
        replacement = {
            "        return diff <= self.tolerance\n": "        return sq_diff, diff <= self.tolerance\n",
            "        print(diff)\n": "        self.last = sq_diff\n",
            "        diff = torch.sqrt(masked_mean(mask, sq_diff) + eps).item()\n":
                "        diff = torch.sqrt(masked_mean(mask, sq_diff) + eps).item()\n        sq_diff.sum().backward()\n",
        }[change]
        src = src.replace(change, replacement)
    assert bool(lint(src, ["NL104"])) == reported


def test_feature_extraction_files_are_quiet():
    src = "import torch\nmag = torch.sqrt(spec.pow(2).sum(-1))\n"
    assert lint(src, ["NL104"], path="feature_extraction_whisper.py") == []
    assert len(lint(src, ["NL104"], path="modeling_whisper.py")) == 1


FIX_CASES = [
    "import torch\ndef f(x):\n    return torch.sqrt(((x - 1) ** 2).sum(-1))\n",
    "import torch\ndef f(x):\n    d = x - 1\n    return d.pow(2).sum(-1, keepdim=True).sqrt()\n",
    "import torch\ndef f(x):\n    v = x.var(-1)\n    return v.sqrt()\n",
    "import torch\ndef f(x):\n    return torch.sqrt(1 - x ** 2)\n",
]


@pytest.mark.parametrize("source", FIX_CASES)
@pytest.mark.parametrize("dtype_name", ["float16", "float32"])
def test_fix_gives_finite_gradient_at_zero(source, dtype_name):
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    fixed = fix_all(source, ["NL104"])
    assert fixed != source and lint(fixed, ["NL104"]) == []
    before, after = {}, {}
    exec(compile(source, "<before>", "exec"), before)
    exec(compile(fixed, "<after>", "exec"), after)
    x0 = torch.ones(2, 3, dtype=dtype)  # sum of (x - 1)**2, var and 1 - x**2 are 0 here
    x0[1] = torch.tensor([0.5, -0.25, 0.75])
    grads = []
    for ns in (before, after):
        x = x0.clone().requires_grad_(True)
        ns["f"](x).sum().backward()
        grads.append(x.grad)
    assert not torch.isfinite(grads[0]).all()
    assert torch.isfinite(grads[1]).all()
    # away from 0 the value is unchanged (up to rounding)
    with torch.no_grad():
        y0, y1 = before["f"](x0[1:]).float(), after["f"](x0[1:]).float()
    assert torch.allclose(y0, y1, rtol=2e-3, atol=1e-3)
