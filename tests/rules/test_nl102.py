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
