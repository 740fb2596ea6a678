"""NL103 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import fix_all, lint  # noqa: E402


def test_bfloat16_threshold_in_message():
    [f] = lint("import torch\np = torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)\n", ["NL103"], dtypes=("bfloat16",))
    assert "bfloat16" in f.message and "88.7" in f.message


def test_no_fix_without_keepdim_or_with_a_tuple_dim():
    for den in ("sum(-1)", "sum((1, 2), keepdim=True)", "sum(-1, keepdim=True, dtype=torch.float32)"):
        src = f"import torch\np = torch.exp(x) / torch.exp(x).{den}\n"
        [f] = lint(src, ["NL103"])
        assert f.fix is None, den


def test_different_exp_arguments_are_not_a_softmax():
    assert lint("import torch\np = torch.exp(a) / torch.exp(b).sum(-1, keepdim=True)\n", ["NL103"]) == []


def test_fix_keeps_keyword_dim():
    src = "import torch\np = torch.exp(s * t) / torch.exp(s * t).sum(dim=2, keepdim=True)\n"
    assert fix_all(src, ["NL103"]) == "import torch\np = torch.softmax(s * t, dim=2)\n"


def test_softmax_fix_is_numerically_the_softmax():
    import torch

    x = torch.randn(4, 7, dtype=torch.float64)
    manual = torch.exp(x) / torch.exp(x).sum(dim=-1, keepdim=True)
    assert torch.allclose(manual, torch.softmax(x, dim=-1))
    assert torch.allclose(torch.log(torch.exp(x).sum(dim=1)), torch.logsumexp(x, dim=1))


def test_a_max_unpacked_with_its_indices_stabilises():
    """``m, _ = torch.max(x, dim, keepdim=True)``: the values are the row max,
    so ``exp(x - m)`` is at most 1; the row min does not stabilise."""
    def found(op):
        return lint(
            "import torch\ndef lse(x):\n"
            f"    m, _ = torch.{op}(x, dim=-1, keepdim=True)\n"
            "    return m + torch.log(torch.sum(torch.exp(x - m), dim=-1))\n",
            ["NL103", "NL002"],
        )
    assert found("max") == []
    assert {f.code for f in found("min")} == {"NL103", "NL002"}
    assert lint("import torch\ndef lse(x):\n    m, i = x.max(-1, keepdim=True)\n"
                "    return torch.log(torch.exp(x - m).sum(-1))\n", ["NL103", "NL002"]) == []


def test_an_in_place_max_subtraction_stabilises_later_exps():
    """Model-parallel cross-entropy: ``logits.sub_(logits_max[..., None])``,
    then ``logits.exp().sum()``; an in-place clamp from above bounds it too.
    A min subtracted, or a max subtracted after the exp, does not."""
    def codes(body):
        return {f.code for f in lint("import torch\n" + body, ["NL103", "NL002"])}
    assert codes("def f(x):\n    m = torch.max(x, dim=-1)[0]\n    x.sub_(m.unsqueeze(-1))\n"
                 "    return torch.log(x.exp().sum(-1))\n") == set()
    assert codes("def f(x):\n    x.clamp_(max=10.0)\n    return x.exp()\n") == set()
    assert codes("def f(x):\n    x.sub_(x.min(-1, keepdim=True)[0])\n"
                 "    return torch.log(x.exp().sum(-1))\n") == {"NL103", "NL002"}
    assert codes("def f(x):\n    y = x.exp()\n    x.sub_(x.max())\n    return y\n") == {"NL002"}


def test_a_float32_factory_is_no_float16_softmax_but_its_half_cast_is():
    src = "import torch\nw = torch.exp(torch.linspace(-eta, 0, n){cast})\nw = w / w.sum()\n"
    assert lint(src.format(cast=""), ["NL103"]) == []
    assert [f.line for f in lint(src.format(cast=".half()"), ["NL103"])] == [3]
