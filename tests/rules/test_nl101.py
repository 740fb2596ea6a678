"""NL101 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402


def test_underflow_thresholds_match_measurements():
    import torch

    from nanlint.probabilities import UNDERFLOW

    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        gap, low, high = UNDERFLOW[name]
        row = torch.tensor([0.0, -(gap + 0.05)]).to(dtype)
        assert torch.softmax(row, -1)[1] == 0
        assert torch.softmax(torch.tensor([0.0, -(gap - 0.5)]).to(dtype), -1)[1] > 0
        assert torch.sigmoid(torch.tensor(low - 0.05).to(dtype)) == 0
        assert torch.sigmoid(torch.tensor(low + 0.5).to(dtype)) > 0
        assert 1 - torch.sigmoid(torch.tensor(high + 0.05).to(dtype)) == 0
        assert 1 - torch.sigmoid(torch.tensor(high - 0.5).to(dtype)) > 0


def test_message_uses_target_dtype():
    [f] = lint("import torch\ny = torch.log(torch.sigmoid(x))\n", ["NL101"], dtypes=("bfloat16",))
    assert "bfloat16" in f.message and "-88.75" in f.message


def test_nl102_stays_quiet_where_nl101_reports():
    sources = [
        "import torch\ny = torch.log(torch.softmax(x, -1))\n",
        "import torch\np = torch.sigmoid(x)\ny = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))\n",
        "import torch\np = x.softmax(-1)\ny = -(p * p.log()).sum(-1)\n",
    ]
    for src in sources:
        codes = {f.code for f in lint(src, ["NL101", "NL102"])}
        assert codes == {"NL101"}, src


def test_variable_and_module_forms_have_no_fix():
    src = "import torch\np = torch.softmax(x, -1)\ny = torch.log(p)\n"
    [f] = lint(src, ["NL101"])
    assert f.fix is None


def test_rebinding_in_a_branch_is_followed_conservatively():
    src = "import torch\ndef f(x, c):\n    p = torch.sigmoid(x)\n    if c:\n        p = p * 0.9 + 0.05\n    return torch.log(p)\n"
    assert lint(src, ["NL101"]) == []


def test_without_gradient_the_log_of_a_softmax_is_medium():
    source = (
        "import torch\n"
        "def scores(model, tokens):\n"
        "    with torch.no_grad():\n"
        "        probs = torch.softmax(model(tokens), -1)\n"
        "        return torch.log(probs) + 1\n"
    )
    [found] = lint(source, ["NL101"])
    assert (found.line, found.confidence) == (5, "medium")
    assert "NaN gradient" not in found.message and "no gradient flows here" in found.message
    [trained] = lint(source.replace("    with torch.no_grad():\n", "    if True:\n"), ["NL101"])
    assert (trained.line, trained.confidence) == (5, "high") and "NaN gradient" in trained.message


def test_a_large_temperature_makes_the_underflow_unusual():
    # a distillation loss: the logits are divided by the temperature before
    # the softmax, so they must span 17.34*T to underflow in float16
    source = (
        "import torch\nimport torch.nn.functional as F\n"
        "class KD:\n"
        "    def __init__(self, temperature=8.0):\n"
        "        self.t = temperature\n"
        "    def cls(self, s, t, temperature=20):\n"
        "        p = F.softmax(s / temperature, dim=1)\n"
        "        return F.kl_div(torch.log(p), F.softmax(t / temperature, dim=1))\n"
        "    def attr(self, s):\n"
        "        return torch.log(F.softmax(s / self.t, -1))\n"
        "    def method(self, s):\n"
        "        z = s.div(10.0)\n"
        "        return torch.log(torch.sigmoid(z))\n"
    )
    found = lint(source, ["NL101"])
    assert [(f.line, f.confidence) for f in found] == [(8, "medium"), (10, "medium"), (13, "medium")]
    assert "logits spanning 346.8 underflow" in found[0].message
    assert "x <= -173.4 underflow" in found[2].message


def test_a_small_or_unknown_temperature_stays_high():
    source = (
        "import torch\nimport torch.nn.functional as F\n"
        "def small(s, temperature=2.0):\n"
        "    return torch.log(F.softmax(s / temperature, -1))\n"
        "def unknown(s, tau):\n"
        "    return torch.log(F.softmax(s / tau, -1))\n"
        "def scaled_up(s):\n"
        "    return torch.log(F.softmax(s / 0.07, -1))\n"
    )
    found = lint(source, ["NL101"])
    assert [(f.line, f.confidence) for f in found] == [(4, "high"), (6, "high"), (8, "high")]


@pytest.mark.parametrize("expr, confidence", [
    # multiplied by a value that can be 0: 0 * -inf is NaN in the result itself
    ("torch.log(probs.softmax(-1)) * weights", "high"),
    ("probs.softmax(-1) * probs.softmax(-1).log()", "high"),
    # look-alikes: a nonzero number, or a sum: -inf stays -inf without a gradient
    ("torch.log(probs.softmax(-1)) * 2.0", "medium"),
    ("torch.log(probs.softmax(-1)) + weights", "medium"),
])
def test_a_log_times_a_value_is_nan_without_a_gradient_too(expr, confidence):
    src = f"import torch\n\n\n@torch.no_grad()\ndef score(probs, weights):\n    return ({expr}).sum(-1)\n"
    found = lint(src, ["NL101"])
    assert [f.confidence for f in found] == [confidence]
    assert ("no gradient flows here" in found[0].message) == (confidence == "medium")
