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
