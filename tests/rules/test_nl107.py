"""NL107 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402

from nanlint.dtypes import BFLOAT16, FLOAT16  # noqa: E402
from nanlint.rules.nl107_bce_on_sigmoid import saturation  # noqa: E402


def test_saturation_matches_measurements():
    # measured with torch 2.13 on CPU: sigmoid == 1 from 8.317 (float16), 6.235 (bfloat16);
    # == 0 from -17.336 (float16), -88.75 (bfloat16)
    one, zero = saturation(FLOAT16)
    assert 8.31 < one < 8.32 and -17.34 < zero < -17.32
    one, zero = saturation(BFLOAT16)
    assert 6.23 < one < 6.24 and -88.8 < zero < -88.7


def test_logits_reassigned_after_the_sigmoid_gets_no_fix():
    src = (
        "import torch, torch.nn.functional as F\n"
        "def f(x, y):\n"
        "    p = torch.sigmoid(x)\n"
        "    x = x * 2\n"
        "    return F.binary_cross_entropy(p, y)\n"
    )
    [f] = lint(src, ["NL107"])
    assert f.fix is None


def test_same_name_rebound_gets_no_fix():
    src = (
        "import torch, torch.nn.functional as F\n"
        "def f(out, y):\n"
        "    out = torch.sigmoid(out)\n"
        "    return F.binary_cross_entropy(out, y)\n"
    )
    [f] = lint(src, ["NL107"])
    assert f.fix is None


def test_module_used_twice_gets_no_fix():
    src = (
        "import torch\nfrom torch import nn\n"
        "crit = nn.BCELoss()\n"
        "def f(x, y, p):\n"
        "    return crit(torch.sigmoid(x), y) + crit(p, y)\n"
    )
    [f] = lint(src, ["NL107"])
    assert f.fix is None


def test_parenthesised_logits_keep_their_parentheses():
    from helpers import fix_all

    src = "import torch, torch.nn.functional as F\nl = F.binary_cross_entropy(torch.sigmoid(a + b).squeeze(-1), y)\n"
    fixed = fix_all(src, ["NL107"])
    assert "binary_cross_entropy_with_logits((a + b).squeeze(-1), y)" in fixed


BRANCHES = (
    "import torch, torch.nn.functional as F\n"
    "def calc_bce(pred, gt, eps=0.01, lerp=None, logits=False):\n"
    "    PRE\n"
    "    if lerp is not None:\n"
    "        if logits:\n"
    "            pred = F.sigmoid(pred)\n"
    "        return lerp_bce(pred, gt, lerp)\n"
    "    else:\n"
    "        return F.binary_cross_entropy(pred, gt)\n"
)


def test_a_sigmoid_bound_in_the_other_branch_does_not_reach_the_loss():
    # the probability computed for the `lerp` branch never reaches the `else` branch's BCE
    assert lint(BRANCHES.replace("PRE", "pred = torch.clamp(pred, eps, 1.0 - eps)"), ["NL107"]) == []
    assert lint(BRANCHES.replace("PRE", "gt = gt.float()"), ["NL107"]) == []


def test_a_sigmoid_bound_before_the_branch_reaches_it():
    [finding] = lint(BRANCHES.replace("PRE", "pred = torch.sigmoid(pred)"), ["NL107"])
    assert finding.line == 9
    # an in-place clamp in between bounds it again
    clamped = BRANCHES.replace("PRE", "pred = torch.sigmoid(pred)\n    pred.clamp_(1e-4, 1 - 1e-4)")
    assert lint(clamped, ["NL107"]) == []
