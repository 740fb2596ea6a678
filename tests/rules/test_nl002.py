"""NL002 on calls that look like torch's exp but are not (issue 12): inductor's
`ops.exp(x)` and triton's `libdevice.exp(x)` were flagged and "fixed" into code
using unbound names; and the `exp2` clamp bound, which is log2(65504), not ln."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402

NOT_TORCH = {
    # the 7 sites in torch's own sources have these shapes
    "inductor.py": "from torch._inductor.virtualized import ops\n"
                   "def f(a, b):\n    return ops.log1p(ops.exp(a - b)) + ops.exp(ops.neg(a))\n",
    "relative.py": "import torch\nfrom .triton_compat import libdevice\n"
                   "def f(x):\n    return libdevice.exp(x) + libdevice.exp2(x)\n",
    "params.py": "import torch\ndef f(ops, tl, x):\n    return ops.exp(x) + tl.exp(x) + tl.exp2(x, )\n",
    "attribute.py": "import torch\nclass K:\n    def f(self, x):\n        return self.ops.exp(x) + V.ops.exp(x)\n",
}
TORCH = {
    # name -> (source, the calls reported)
    "functions.py": ("import torch\nimport torch as T\nfrom torch import exp\n"
                     "def f(x):\n    return torch.exp(x) + T.special.exp2(x) + exp(x)\n",
                     ["torch.exp(x)", "T.special.exp2(x)", " exp(x)"]),
    "methods.py": ("import torch\ndef f(x, ops):\n    return x.exp() + ops.x.exp2() + x.exp_() + x.expm1()\n",
                   ["x.exp()", "ops.x.exp2()", "x.exp_()", "x.expm1()"]),
}


def _where(text, calls):
    """'line:column' of each call in ``text``."""
    out = []
    for call in calls:
        offset = text.index(call) + (len(call) - len(call.lstrip()))
        line = text.count("\n", 0, offset) + 1
        out.append(f"{line}:{offset - text.rfind(chr(10), 0, offset)}")
    return out


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, capture_output=True, text=True)


def test_only_torch_ops_and_tensor_methods_are_reported_and_fixed(tmp_path):
    for name, text in NOT_TORCH.items():
        (tmp_path / name).write_text(text)
    for name, (text, _) in TORCH.items():
        (tmp_path / name).write_text(text)
    proc = run("check", "--no-cache", "--min-confidence", "low", "--select", "NL002", ".", cwd=tmp_path)
    found = sorted(line.split(": ")[0] for line in proc.stdout.splitlines() if " NL002 " in line)
    expected = sorted(f"{name}:{at}" for name, (text, calls) in TORCH.items() for at in _where(text, calls))
    assert found == expected

    proc = run("fix", "--unsafe-fixes", "--no-cache", "--min-confidence", "low", "--select", "NL002", ".", cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    for name, text in NOT_TORCH.items():
        assert (tmp_path / name).read_text() == text, name
    for name in TORCH:
        fixed = (tmp_path / name).read_text()
        compile(fixed, name, "exec")
    # the fixed files lint clean
    assert run("check", "--no-cache", "--min-confidence", "low", "--select", "NL002", ".", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("call", ["torch.exp2(x)", "x.exp2()", "torch.special.exp2(x)"])
def test_exp2_is_clamped_at_log2_of_the_largest_half(tmp_path, call):
    (tmp_path / "m.py").write_text(f"import torch\n\ndef f(x):\n    return {call}\n")
    proc = run("fix", "--unsafe-fixes", "--no-cache", "--min-confidence", "low", "--select", "NL002", "m.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    namespace: dict = {}
    exec(compile((tmp_path / "m.py").read_text(), "m.py", "exec"), namespace)
    x = torch.tensor([15.0, 15.99, 16.0, 1000.0], dtype=torch.float16)
    y = namespace["f"](x)
    assert torch.isfinite(y).all()
    assert y[0].item() == 2.0 ** 15  # in range: unchanged by the clamp
    assert y[1].item() == torch.exp2(x[1]).item()
    assert y[3].item() > 60000  # clamped just below the largest float16


SSM_STEP = (
    "import torch\n"
    "import torch.nn.functional as F\n"
    "def step(dt, bias, A_log):\n"
    "    A = -torch.exp(A_log.float())\n"
    "    dt = F.softplus(dt + bias)\n"
    "    return torch.exp(torch.einsum('bd,dn->bdn', dt, A))\n"
)


def test_exp_of_a_product_of_opposite_signs_is_bounded():
    # softplus >= 0 times -exp(...) <= 0: the discretised decay exp(dt * A) <= 1
    assert lint(SSM_STEP, ["NL002"]) == []
    assert lint(SSM_STEP.replace("torch.einsum('bd,dn->bdn', dt, A)", "dt.mul(A)"), ["NL002"]) == []


def test_exp_of_a_product_of_unsigned_factors_is_reported():
    positive = SSM_STEP.replace("A = -torch.exp", "A = torch.exp")
    assert [f.line for f in lint(positive, ["NL002"])] == [6]
    unknown = SSM_STEP.replace("    dt = F.softplus(dt + bias)\n", "")
    assert [f.line for f in lint(unknown, ["NL002"])] == [5]


def test_a_product_of_two_transposes_is_not_a_score():
    """``attn.transpose(1, 2) @ logs.transpose(1, 2)`` is ``(logs @ attn).T``:
    an alignment applied to predicted log-scales (VITS inference), not a dot
    product of activations, so its exp is medium; a query held in a name that
    was transposed when it was made is still a score's left side."""
    def confidence(expr):
        source = (
            "import torch\ndef f(attn, logs, q, k):\n"
            "    q = q.view(2, 3, 4).transpose(1, 2)\n"
            f"    return torch.exp({expr})\n"
        )
        return [f.confidence for f in lint(source, ["NL002"])]
    assert confidence("torch.matmul(attn.transpose(1, 2), logs.transpose(1, 2))") == ["medium"]
    assert confidence("attn.mT @ logs.mT") == ["medium"]
    assert confidence("torch.matmul(q, k.transpose(-2, -1))") == ["high"]
    assert confidence("q @ k.mT") == ["high"]


def test_a_gaussian_exponent_through_a_reciprocal_is_bounded():
    """``exp((x - mu) ** 2 * (-0.5 * reciprocal(sigma ** 2)))`` is at most 1:
    a reciprocal keeps its argument's sign; of a tensor of unknown sign it
    proves nothing."""
    def found(k):
        return lint(
            "import torch\ndef gauss(x, mu, sigma):\n"
            "    d = (x - mu) ** 2\n"
            f"    k = {k}\n"
            "    g = torch.exp(d * k)\n"
            "    return g / g.sum(-1, keepdim=True)\n",
            ["NL002", "NL103"],
        )
    assert found("-0.5 * torch.reciprocal(sigma ** 2)") == []
    assert found("-0.5 * (sigma ** 2).reciprocal()") == []
    assert {f.code for f in found("-0.5 * torch.reciprocal(sigma)")} == {"NL002", "NL103"}


def test_einops_rearrange_and_repeat_keep_the_sign():
    """Mamba in Megatron repeats ``A = -exp(A_log)`` per head with einops
    before the discretised decay ``exp(dt * A)``: still <= 0."""
    def found(a):
        return lint(
            "import torch\nimport torch.nn.functional as F\nfrom einops import repeat\n"
            "def step(A_log, dt, bias):\n"
            f"    A = {a}\n"
            "    A = repeat(A, 'h -> (h p) n', p=4, n=16)\n"
            "    dt = F.softplus(dt + bias)\n"
            "    return torch.exp(torch.einsum('bd,dn->bdn', dt, A))\n",
            ["NL002"],
        )
    assert found("-torch.exp(A_log.float())") == []
    assert [f.line for f in found("torch.exp(A_log.float())")] == [8]


@pytest.mark.parametrize("guard, reported", [
    ("torch.where(torch.isneginf(m), torch.zeros_like(m), m)", False),
    ("torch.where(~torch.isfinite(m), 0.0, m)", False),
    ("torch.where(m == float('-inf'), torch.zeros_like(m), m)", False),
    # look-alikes: the test is not on the pivot, or not of non-finiteness
    ("torch.where(torch.isneginf(s), torch.zeros_like(m), m)", True),
    ("torch.where(pad, torch.zeros_like(m), m)", True),
    # the branches swapped: the finite maxima are replaced by 0
    ("torch.where(torch.isneginf(m), m, torch.zeros_like(m))", True),
])
def test_a_max_pivot_guarded_for_all_masked_rows_still_stabilises(guard, reported):
    """fla's reference attention: a fully masked row has an -inf max, replaced by
    0; there `s - 0` is -inf, so `s - m <= 0` holds on every row."""
    source = (
        "import torch\n"
        "def attend(s, pad):\n"
        "    s = s.masked_fill(pad, float('-inf'))\n"
        "    m = s.amax(dim=-1, keepdim=True)\n"
        f"    m = {guard}\n"
        "    p = (s - m).exp()\n"
        "    return p, p.sum(-1)\n"
    )
    assert bool([f for f in lint(source, ["NL002"]) if f.line == 6]) == reported


def test_a_value_minus_an_elementwise_maximum_it_takes_part_in_is_at_most_zero():
    # RWKV's log-space running state: p = maximum(pp, ww), then exp(pp - p), exp(ww - p)
    src = (
        "import torch\n"
        "def step(pp, ww, k):\n"
        "    p = torch.maximum(pp, ww)\n"
        "    e1 = torch.exp(pp - p)\n"
        "    e2 = torch.exp(ww - p)\n"
        "    e3 = torch.exp(k - p)\n"
        "    return e1, e2, e3, torch.exp(k - max(pp, k)), torch.exp(k - torch.minimum(pp, k))\n"
    )
    # look-alikes: k takes no part in that maximum; a minimum bounds nothing above
    assert [(f.line, f.column) for f in lint(src, ["NL002"])] == [(6, 10), (7, 51)]


def test_a_coefficient_set_in_init_carries_its_sign_to_forward():
    # SchNet's Gaussian smearing: coeff = -0.5 / step**2, then exp(coeff * d**2) <= 1
    src = (
        "import torch\n"
        "class Smearing(torch.nn.Module):\n"
        "    def __init__(self, start, stop, n):\n"
        "        super().__init__()\n"
        "        offset = torch.linspace(start, stop, n)\n"
        "        self.coeff = -0.5 / (offset[1] - offset[0]).item() ** 2\n"
        "        self.register_buffer('offset', offset)\n"
        "    def forward(self, dist):\n"
        "        d = dist.view(-1, 1) - self.offset.view(1, -1)\n"
        "        return torch.exp(self.coeff * torch.pow(d, 2))\n"
    )
    assert lint(src, ["NL002"]) == []
    # look-alikes: a positive coefficient; one flipped in place later
    assert [f.line for f in lint(src.replace("-0.5 /", "0.5 /"), ["NL002"])] == [10]
    flipped = src.replace("        self.register_buffer", "        self.coeff *= -1\n        self.register_buffer")
    assert [f.line for f in lint(flipped, ["NL002"])] == [11]


def test_an_alignment_applied_to_channel_first_values_is_no_score():
    # VITS: the durations' path matrix averages the predicted log-scales over
    # time; the transposes only move the channels, so nothing sums feature products
    src = (
        "import torch\n"
        "def expand(attn, m_p, logs_p):\n"
        "    logs_p = torch.matmul(attn.squeeze(1), logs_p.transpose(1, 2)).transpose(1, 2)\n"
        "    return m_p + torch.randn_like(m_p) * torch.exp(logs_p)\n"
        "def scores(q, k):\n"
        "    s = torch.matmul(q, k.transpose(1, 2))\n"
        "    t = (q @ k.transpose(-2, -1)).transpose(1, 2)\n"
        "    return torch.exp(s), torch.exp(t)\n"
    )
    found = {f.line: f.confidence for f in lint(src, ["NL002"])}
    # the alignment's exp is that of an activation (medium); the look-alikes
    # are scores: not transposed back, or transposed back along other dims
    assert found[4] == "medium"
    assert found[8] == "high"
    assert [f.column for f in lint(src, ["NL002"]) if f.line == 8 and f.confidence == "high"] == [12, 26]


def test_an_exponent_built_from_a_complex_value_is_not_a_float16_exp():
    # a state-space kernel: the argument is complex through a local name and an einsum
    src = (
        "import torch\nimport torch.nn as nn\n\n"
        "class SSM(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(4, 4)\n\n"
        "    def kernel(self, L, scale):\n"
        "        lam = -torch.exp(self.log_re) + 1j * self.im\n"
        "        z = scale.unsqueeze(1) * lam[None, :]\n"
        "        return torch.einsum('bd,l->bld', z, torch.arange(L)).exp()\n\n"
        "    def forward(self, x):\n"
        "        return torch.exp(self.proj(x))\n"
    )
    assert [f.line for f in lint(src, ["NL002"])] == [15]
