"""NL003 beyond its documented examples: target dtypes, and what counts as a mask."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402


def codes(source, dtypes=("float16",)):
    return [f.line for f in lint(source, ["NL003"], dtypes=dtypes)]


def test_out_of_range_literal_is_a_float16_issue_only():
    src = "import torch\ns = s.masked_fill(~m, -1e9)\n"
    assert codes(src) == [2]
    assert codes(src, ("bfloat16",)) == []  # bf16 max 3.39e38
    assert codes(src, ("bfloat16", "float16")) == [2]


def test_float32_min_overflows_bfloat16_too():
    src = "import torch\ns = s.masked_fill(~m, torch.finfo(torch.float32).min)\n"
    assert codes(src, ("bfloat16",)) == [2]
    assert "bfloat16" in lint(src, ["NL003"], dtypes=("bfloat16",))[0].message


def test_infinite_fill_in_every_dtype():
    src = "import torch\ns = s.masked_fill(~m, float('-inf'))\n"
    assert codes(src, ("bfloat16",)) == [2]


def test_known_float32_receiver_exempts_finite_fills_only():
    assert codes("import torch\ns = s.float().masked_fill(~m, -1e9)\n") == []
    assert codes("import torch\ns = s.float().masked_fill(~m, float('-inf'))\n") == [2]
    src = "import torch\ndef f(q, k, m):\n    s = (q @ k).to(torch.float32)\n    return s.masked_fill(m, -1e9)\n"
    assert codes(src) == []


def test_fill_followed_only_by_selection_is_clean():
    src = (
        "import torch\n"
        "def route(scores, keep, k):\n"
        "    masked = scores.masked_fill(~keep, float('-inf'))\n"
        "    return masked.topk(k, dim=-1).indices\n"
    )
    assert codes(src) == []
    # ... but not when it also reaches a softmax
    src += "def attend(scores, keep):\n    s = scores.masked_fill(~keep, float('-inf'))\n    i = s.argmax(-1)\n    return s.softmax(-1), i\n"
    assert codes(src) == [6]


def test_positive_inf_outside_masked_fill_needs_a_mask():
    assert codes("import torch\nresult[p.alpha <= 1] = torch.inf\n") == []
    assert codes("import torch\nanchors = torch.where(valid_mask, anchors, torch.inf)\n") == [2]
    assert codes("import torch\nd = d.masked_fill(same, float('inf'))\n") == [2]


def test_fix_safety_follows_the_filled_expression():
    [safe] = lint("import torch\ns = self.s.masked_fill(m, float('-inf'))\n", ["NL003"])
    assert safe.fix.applicability == "safe"
    [unsafe] = lint("import torch\ns = (a @ b).masked_fill(m, float('-inf'))\n", ["NL003"])
    assert unsafe.fix.applicability == "unsafe"
    [none] = lint("import torch\ns = self.proj(x).masked_fill(m, float('-inf'))\n", ["NL003"])
    assert none.fix is None  # the fix would run the projection twice
