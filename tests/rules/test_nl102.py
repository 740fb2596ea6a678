"""NL102 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402


def test_quiet_on_any_guard():
    for operand in ("p + 1e-8", "p.clamp(min=1e-8)", "p.clamp_min(eps)", "torch.maximum(p, q)", "1 - p + eps"):
        src = f"import torch\ny = -(target * torch.log({operand}))\n"
        assert lint(src, ["NL102"]) == [], operand


def test_quiet_when_result_is_sanitised_later():
    src = (
        "import torch\n"
        "def f(p):\n"
        "    h = p * torch.log(p)\n"
        "    h[p == 0] = 0\n"
        "    return h\n"
    )
    assert lint(src, ["NL102"]) == []


def test_fix_only_for_a_plain_reference():
    [f] = lint("import torch\ny = torch.log(1 - probs)\n", ["NL102"])
    assert f.fix is None
    [g] = lint("import torch\ny = -(target * torch.log(self.p))\n", ["NL102"])
    assert g.fix is not None


def test_not_a_log_of_a_plain_tensor():
    assert lint("import torch\ny = torch.log(x)\nz = torch.log2(a / b)\n", ["NL102"]) == []


def test_an_energy_is_medium_and_only_unguarded():
    """A power spectrum or magnitude is 0 only for a silent or zero input: medium."""
    def found(expr):
        src = f"import torch\ndef f(stft, x, power):\n    spectr = stft.pow(2).sum(-1).pow(power)\n    return {expr}\n"
        return [(f.code, f.confidence) for f in lint(src, ["NL102"])]
    for expr in ("torch.log(spectr)", "torch.log((x ** 2).mean(-1))",
                 "torch.log(x.abs().pow(2))", "torch.log(x.pow(2).sum(-1).sqrt())"):
        assert found(expr) == [("NL102", "medium")], expr
    for expr in ("torch.log(spectr + 1e-6)", "torch.log(spectr.clamp_min(1e-10))", "torch.log(x.pow(2))",
                 "torch.log(torch.abs(x))",
                 "torch.log(x.pow(3).sum(-1))", "torch.log(x.exp().sum(-1))"):
        assert found(expr) == [], expr


def test_a_guard_before_a_renormalising_rebinding_is_seen():
    # NeMo-Aligner's soft labels: the eps is added, then the name is rebound to its own normalisation
    guarded = (
        "import torch\n"
        "def entropy(labels):\n"
        "    labels_s = labels + 1e-4\n"
        "    labels_s = labels_s / labels_s.sum(1, keepdim=True)\n"
        "    return (labels_s * torch.log(labels_s)).sum(1)\n"
    )
    assert lint(guarded, ["NL102"]) == []
    unguarded = guarded.replace("labels_s = labels + 1e-4", "labels_s = torch.softmax(labels, 1)")
    [finding] = lint(unguarded, ["NL102"])
    assert finding.line == 5


def test_a_cap_on_the_probability_keeps_its_complement_above_zero():
    """LMFlow's KL-DPO loss: `p = torch.minimum(p, torch.ones_like(p) * 0.999)` then
    `log(1 - p)`: 0.999 is 0.99902 in float16, so `1 - p` >= 9.8e-4. The same
    loss without the cap keeps the finding."""
    def found(cap):
        src = ("import torch\nimport torch.nn.functional as F\n\n\ndef kl(logits, beta):\n"
               "    p = F.sigmoid(beta * logits)\n"
               f"{cap}"
               "    return p * torch.log(p + 1e-3) + (1 - p) * torch.log(1 - p)\n")
        return [f.code for f in lint(src, ["NL101", "NL102"])]
    assert found("    p = torch.minimum(p, torch.ones_like(p) * 0.999)\n") == []
    assert found("    p = torch.fmin(p, torch.full_like(p, 0.999))\n") == []
    assert found("") == ["NL101"]
