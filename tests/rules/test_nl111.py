"""NL111 beyond its documented examples: the hazard is real, the count fix
removes it without changing any other value, and the guards that real code
uses keep the rule quiet."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import fix_all, lint  # noqa: E402

MASKED_MEAN = (
    "import torch\n"
    "def masked_mean(x, labels):\n"
    "    valid = labels != -100\n"
    "    return (x * valid).sum(-1) / valid.sum(-1)\n"
)


def test_count_fix_removes_the_nan_and_keeps_every_other_value():
    torch = pytest.importorskip("torch")
    [finding] = lint(MASKED_MEAN, ["NL111"])
    assert finding.confidence == "low" and finding.fix is not None and finding.fix.applicability == "safe"
    fixed = fix_all(MASKED_MEAN, ["NL111"])
    assert "valid.sum(-1).clamp(min=1)" in fixed
    compile(fixed, "<fixed>", "exec")
    assert lint(fixed, ["NL111"]) == []
    before, after = {}, {}
    exec(compile(MASKED_MEAN, "<before>", "exec"), before)
    exec(compile(fixed, "<after>", "exec"), after)
    for dtype in (torch.float16, torch.float32):
        x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=dtype)
        labels = torch.tensor([[1, -100, 2], [-100, -100, -100]])  # the second row is all padding
        y0, y1 = before["masked_mean"](x, labels), after["masked_mean"](x, labels)
        assert torch.isnan(y0[1])  # the hazard is real: 0 / 0
        assert torch.isfinite(y1).all() and y1[1] == 0
        assert y0[0] == y1[0]  # a row with tokens keeps its value


def test_a_float_mask_gets_no_fix():
    # a soft mask may sum to less than 1, where clamp(min=1) would change the mean
    src = "import torch\ndef f(x, mask):\n    return (x * mask).sum() / mask.sum()\n"
    [finding] = lint(src, ["NL111"])
    assert finding.fix is None


@pytest.mark.parametrize("guard", [
    "    n.clamp_(min=1)\n",
    "    n[n == 0] = 1\n",
    "    n += 1e-4\n",
    "    assert (n > 0).all()\n",
    "    if (n == 0).any():\n        return x.sum() * 0\n",
])
def test_a_guard_on_the_divisor_keeps_it_quiet(guard):
    src = f"import torch\ndef f(x, labels):\n    n = (labels >= 0).sum(-1)\n{guard}    return x.sum(-1) / n\n"
    assert lint(src, ["NL111"]) == []


def test_a_finiteness_check_is_no_guard():
    src = (
        "import torch\n"
        "def f(x, stats):\n"
        "    low = stats['min']\n"
        "    high = stats['max']\n"
        "    assert not torch.isinf(high).any()\n"
        "    return (x - low) / (high - low)\n"
    )
    [finding] = lint(src, ["NL111"])
    assert "range" in finding.message


@pytest.mark.parametrize("divisor, kind", [
    ("x.std()", "standard deviation"),
    ("torch.std(x, dim=0)", "standard deviation"),
    ("(x - y).norm(dim=-1, keepdim=True)", "difference"),
    ("torch.linalg.vector_norm(x - y, dim=-1, keepdim=True)", "difference"),
    ("(x.max() - x.min())", "range"),
    ("(x.amax(0) - x.amin(0))", "range"),
    ("x.max(0).values - x.min(0).values", "range"),
])
def test_spreads_norms_and_ranges(divisor, kind):
    src = f"import torch\ndef f(x, y):\n    return x / ({divisor})\n"
    [finding] = lint(src, ["NL111"])
    assert kind in finding.message and finding.fix is None


@pytest.mark.parametrize("divisor", [
    "x.std() + 1e-4",
    "(x - w).norm(dim=-1, keepdim=True).clamp_min(1e-4)",
    "x.norm(dim=-1, keepdim=True)",  # a learned embedding: not a difference
    "torch.clamp(x.max() - x.min(), min=1e-4)",
    "w.sum()",               # weights, not a mask
    "len(x)",                # a Python int
    "mask.sum().item()",     # a Python number
    "x.var()",               # NL001 judges sqrt(var + eps)
    "x.abs().max()",         # a largest value, not a range
])
def test_look_alikes_stay_quiet(divisor):
    src = f"import torch\ndef f(x, w, mask):\n    return x / ({divisor})\n"
    assert lint(src, ["NL111"]) == []


def test_numpy_statistics_are_not_flagged():
    src = "import numpy as np\ndef f(a):\n    a = np.asarray(a, dtype=np.float32)\n    return (a - a.mean()) / a.std()\n"
    assert lint(src, ["NL111"]) == []


def test_a_division_that_where_selects_is_left_to_nl109():
    src = "import torch\ndef f(a, m):\n    n = m.sum(-1)\n    return torch.where(n > 0, a / n, 0)\n"
    assert lint(src, ["NL111"]) == []


def test_inplace_division_and_torch_div_forms():
    src = (
        "import torch\n"
        "def f(loss, mask, a):\n"
        "    loss /= (mask > 0).sum()\n"
        "    b = torch.div(a, (a - loss).norm())\n"
        "    return loss, b, a.div(a.std())\n"
    )
    assert [f.line for f in lint(src, ["NL111"])] == [3, 4, 5]


def test_the_rule_is_opt_in():
    from nanlint.registry import select_infos

    assert "NL111" not in {i.code for i in select_infos(None)}
    assert "NL111" in {i.code for i in select_infos(None, ["NL111"])}
