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


# -- confidence: what a user sees by default ------------------------------------------------
import json  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402


def check(tmp_path, source, minimum="low", half=True):
    """(line, confidence) of NL003 as `nanlint check` reports them, run as users run it,
    in a folder whose other file runs the model in half (``half``), as a float16
    overflow needs."""
    path = tmp_path / "model.py"
    path.write_text(source, encoding="utf-8")
    if half:
        (tmp_path / "run.py").write_text("def run(model, x):\n    return model.half()(x.half())\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nanlint", "check", "--no-cache", "--select", "NL003", "--min-confidence", minimum,
         "--output-format", "json", "--exit-zero", str(path)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return [(f["line"], f["confidence"]) for f in json.loads(proc.stdout)]


# masks that cannot blank a row by themselves: (the mask's construction, the fill line)
STRUCTURAL = {
    "causal buffer": ("    keep = torch.tril(torch.ones(n, n))\n", "    s = s.masked_fill(keep == 0, float('-inf'))\n"),
    "strict upper": ("    up = torch.ones(n, n, dtype=torch.bool).triu(1)\n", "    s = s.masked_fill(up, -math.inf)\n"),
    "inverted lower": ("    keep = torch.ones(n, n).tril().bool()\n", "    s = s.masked_fill(~keep, -math.inf)\n"),
    "index grid": ("    i = torch.arange(n)\n", "    s = torch.where(i[:, None] >= i[None, :], s, float('-inf'))\n"),
    "meshgrid": ("    x, y = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='xy')\n",
                 "    s = torch.where(x <= y, s, float('-inf'))\n"),
    "top-k": ("    v, _ = torch.topk(s, 5)\n", "    s[s < v[:, [-1]]] = -float('inf')\n"),
    "min-p": ("    top = s.softmax(-1).amax(-1, keepdim=True)\n",
              "    s = s.masked_fill(s.softmax(-1) < 0.1 * top, -math.inf)\n"),
    "top-p": ("    drop = s.sort(-1)[0].softmax(-1).cumsum(-1) > 0.9\n    drop[..., 0] = False\n",
              "    s = s.masked_fill(drop, -math.inf)\n"),
    "one column": ("", "    s[:, eos] = -math.inf\n"),
    "a slice of columns": ("", "    s[:, : eos] = -math.inf\n"),
    "after a slice": ("", "    s[1:][same] = -math.inf\n"),
}


@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_a_mask_that_keeps_an_entry_of_every_row_is_never_shown_by_default(tmp_path, name):
    make, fill = STRUCTURAL[name]
    head = "import math\nimport torch\ndef f(s, n, eos, same):\n" + make + fill
    line = head.count("\n")
    # normalised right here: nothing can blank the kept entry, no finding at any confidence
    # (`s[1:][m]` keeps row 0 only along the first dimension: low whichever is normalised)
    here = [(line, "low")] if name == "after a slice" else []
    assert check(tmp_path, head + "    return torch.softmax(s, dim=-1)\n") == here
    # returned: another mask may be added elsewhere -- low, never shown by default
    assert check(tmp_path, head + "    return s\n") == [(line, "low")]
    assert check(tmp_path, head + "    return s\n", "medium") == []


@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_look_alikes_that_can_blank_a_row_are_not_excused(tmp_path, name):
    """The same fills with the structure broken: the diagonal masked, `<=` a top value
    (the top entry goes too), a whole row indexed: a data mask again (medium)."""
    broken = {
        "causal buffer": ("    keep = torch.tril(torch.ones(n, n), diagonal=-1)\n", None),
        "strict upper": ("    up = torch.ones(n, n, dtype=torch.bool).triu(0)\n", None),
        "inverted lower": ("    keep = torch.ones(n, n).tril(-1).bool()\n", None),
        "index grid": (None, "    s = torch.where(i[:, None] > i[None, :], s, float('-inf'))\n"),
        "meshgrid": ("    x, y = torch.meshgrid(torch.arange(n), torch.arange(m), indexing='xy')\n", None),
        "top-k": (None, "    s[s <= v[:, [0]]] = -float('inf')\n"),
        "min-p": (None, "    s = s.masked_fill(s.softmax(-1) <= top, -math.inf)\n"),
        "top-p": ("    drop = s.sort(-1)[0].softmax(-1).cumsum(-1) > 0.9\n", None),
        "one column": (None, "    s[eos, :] = -math.inf\n"),
        "a slice of columns": (None, "    s[: eos, :] = -math.inf\n"),
        "after a slice": (None, "    s[:][same] = -math.inf\n"),
    }[name]
    make, fill = STRUCTURAL[name]
    make = broken[0] if broken[0] is not None else make
    fill = broken[1] if broken[1] is not None else fill
    head = "import math\nimport torch\ndef f(s, n, m, eos, same):\n" + make + fill
    line = head.count("\n")
    assert check(tmp_path, head + "    return torch.softmax(s, dim=-1)\n") == [(line, "medium")]


@pytest.mark.parametrize("op,diagonal,filled", [
    ("triu", "", True), ("triu", ", diagonal=0", True), ("triu", ", diagonal=-1", True),
    ("triu", ", diagonal=1", False), ("triu", ", 2", False),
    ("tril", "", True), ("tril", ", diagonal=1", True), ("tril", ", diagonal=-1", False),
    ("triu", ", diagonal=0 + 1", False), ("triu", ", diagonal=1 - 2", True), ("tril", ", diagonal=2 - 3", False),
    # a position plus a positive literal: the causal offset of a key-value cache
    ("triu", ", diagonal=start + 1", False), ("triu", ", diagonal=1 + cache.shape[1]", False),
    ("triu", ", diagonal=len(past) + 1", False),
    # look-alikes whose sign the reading does not know stay medium
    ("triu", ", diagonal=start - 1", None), ("triu", ", diagonal=1 - start", None),
    ("triu", ", diagonal=-start + 1", None), ("triu", ", diagonal=start + 0", None),
    ("tril", ", diagonal=start + 1", None),
])
def test_a_triangle_of_minus_inf_that_keeps_the_diagonal_filled_is_high(tmp_path, op, diagonal, filled):
    src = (f"import torch\ndef mask(n, start, cache, past):\n"
           f"    return torch.{op}(torch.full((n, n), float('-inf')){diagonal})\n")
    assert check(tmp_path, src) == [(3, {True: "high", False: "low", None: "medium"}[filled])]


def test_overflowing_literal_is_high_and_only_where_half_can_reach(tmp_path):
    src = (
        "import torch\n"
        "def f(scores, pad, ids, q):\n"
        "    a = scores.masked_fill(pad, -1e9)\n"                # may be float16: raises
        "    wide = q.float()\n"
        "    wide = wide.masked_fill(pad, -1e9)\n"                # float32: representable
        "    tokens = ids.long()\n"
        "    tokens[pad] = 128000\n"                              # integer tensor: a token id
        "    ids[pad] = 128000\n"                                 # maybe integers: low
        "    return a, wide, tokens, ids\n"
    )
    assert check(tmp_path, src) == [(3, "high"), (8, "low")]
    assert check(tmp_path, src, "high") == [(3, "high")]


def test_padding_mask_is_medium_and_a_mask_product_high(tmp_path):
    src = (
        "import torch\n"
        "def f(scores, key_padding_mask):\n"
        "    scores = scores.masked_fill(key_padding_mask[:, None, None, :], float('-inf'))\n"
        "    bias = (1.0 - key_padding_mask.to(scores.dtype)) * -float('inf')\n"
        "    return torch.softmax(scores + bias, dim=-1)\n"
    )
    assert check(tmp_path, src) == [(3, "medium"), (4, "high")]
    assert check(tmp_path, src, "high") == [(4, "high")]


def test_in_place_fill_read_only_by_a_selection_is_clean():
    src = (
        "import torch\n"
        "def align(attn, src_invalid):\n"
        "    attn[:, src_invalid] = float('-inf')\n"
        "    _, best = attn.max(dim=1)\n"
        "    return best\n"
        "def route(scores, keep):\n"
        "    scores.masked_fill_(~keep, float('-inf'))\n"
        "    return scores.topk(2).indices\n"
    )
    assert codes(src) == []
    # a later reassignment starts a new value: its reads do not count for the fill
    src = (
        "import torch\n"
        "def f(scores, keep):\n"
        "    scores.masked_fill_(~keep, float('-inf'))\n"
        "    best = scores.argmax(-1)\n"
        "    scores = scores.softmax(-1)\n"
        "    return scores, best\n"
    )
    assert codes(src) == [3]


def test_a_name_read_in_its_own_assignment_sees_the_value_before():
    """`scores = scores.masked_fill(...)` reads the float32 `scores` bound before it."""
    src = (
        "import torch\n"
        "def f(q, pad):\n"
        "    scores = q.float()\n"
        "    scores = scores.masked_fill(pad, -1e9)\n"
        "    return scores.softmax(-1)\n"
    )
    assert codes(src) == []


def test_a_row_or_a_shifted_grid_is_not_a_causal_mask():
    src = (
        "import torch\n"
        "def f(s, n):\n"
        "    keep = torch.tril(torch.ones(n, n))\n"
        "    i = torch.arange(n)\n"
        "    a = s.masked_fill(keep[1:] == 0, float('-inf')).softmax(-1)\n"
        "    b = torch.where(i[1:, None] >= i[None, :], s, float('-inf')).softmax(-1)\n"
        "    c = s.masked_fill(keep[:, :, :n, :n] == 0, float('-inf')).softmax(-1)\n"
        "    return a, b, c\n"
    )
    assert codes(src) == [5, 6]


QA_HEAD = """import torch
from torch import nn


class QA(nn.Module):
    def forward(self, hidden, question_lengths=None):
        logits_mask = None
        if question_lengths is not None:
            logits_mask = self.question_mask(question_lengths, hidden.size(1))
        logits = self.classifier(hidden)
        if logits_mask is not None:
            logits = logits - logits_mask * 1e6
        return logits.softmax(-1)

    @staticmethod
    def question_mask(lengths, maxlen):
        mask = torch.arange(0, maxlen, device=lengths.device).unsqueeze(0)
        mask = MASK
        return mask
"""


@pytest.mark.parametrize("mask, reported", [
    # torch.where of two Python ints is int64: int64 * 1e6 is float32, and a
    # float16 minus a float32 tensor is float32 (no overflow)
    ("torch.where(mask < lengths, 1, 0)", False),
    ("(mask < lengths).long()", False),
    # look-alikes whose mask takes the activation's dtype: the product is float16
    ("torch.where(mask < lengths, 1, 0).to(lengths.dtype)", True),
    ("torch.where(mask < lengths, lengths, 0)", True),
])
def test_an_integer_mask_times_a_float_literal_is_float32(mask, reported):
    assert bool(codes(QA_HEAD.replace("MASK", mask))) == reported


def test_where_takes_its_branches_dtype_not_its_conditions():
    # `torch.where(pos >= 0, scores, -1e9)` is the scores' dtype, not the bool condition's
    src = ("import torch\n"
           "def attend(q, k, pos):\n"
           "    scores = torch.where(pos >= 0, q @ k.transpose(-2, -1), -1e9)\n"
           "    return scores.softmax(-1)\n")
    assert codes(src) == [3]
    src32 = src.replace("q @ k.transpose(-2, -1)", "(q @ k.transpose(-2, -1)).float()")
    assert codes(src32) == []


def test_a_finite_fill_is_as_sure_as_inf_except_where_masked_fill_raises(tmp_path):
    """`x[m] = -1e20` and `where(m, x, -1e20)` turn -inf silently in float16: NaN needs a
    fully masked row, as for -inf (medium); `masked_fill` raises on any half tensor (high)."""
    source = (
        "import torch\n"
        "def block(log_probs, banned, keep):\n"
        "    log_probs[banned] = -10e20\n"
        "    scores = torch.where(keep, log_probs, -1e20)\n"
        "    return scores.masked_fill(banned, -1e20)\n"
    )
    assert check(tmp_path, source) == [(3, "medium"), (4, "medium"), (5, "high")]
    assert check(tmp_path, source, "high") == [(5, "high")]
    # nothing in the folder runs in reduced precision: the overflow needs a user's own float16 run
    # (and the silent fills a fully masked row besides: low)
    (tmp_path / "run.py").unlink()
    assert check(tmp_path, source, half=False) == [(3, "low"), (4, "low"), (5, "medium")]
    (tmp_path / "run.py").write_text("import torch\n\n\ndef run(model, x):\n    with torch.autocast('cuda'):\n"
                                     "        return model(x)\n")
    assert check(tmp_path, source, half=False) == [(3, "medium"), (4, "medium"), (5, "high")]
    # a float32 tensor holds -1e20: nothing to report
    upcast = source.replace("def block(log_probs, banned, keep):\n",
                            "def block(log_probs, banned, keep):\n    log_probs = log_probs.float()\n")
    assert check(tmp_path, upcast) == []


def test_a_tensor_turned_into_signed_infinities_is_not_a_masked_score():
    """A threshold mapped to -inf below and +inf above (a map for a sigmoid)
    is no mask before a softmax; one sign alone, or another tensor's +inf,
    still is."""
    def found(second):
        return lint(
            "import torch\ndef classify(x, t, y):\n"
            "    x[x < t] = -float('inf')\n"
            f"    {second}\n"
            "    return x\n",
            ["NL003"],
        )
    assert found("x[x >= t] = float('inf')") == []
    assert found("x[x >= t] = math.inf") == []
    assert [f.line for f in found("y[y >= t] = float('inf')")] == [3]
    assert [f.line for f in found("x[x >= t] = 0.0")] == [3]


def test_a_float32_bound_on_a_tensor_of_unseen_origin_is_medium():
    """``scores.masked_fill(~valid, torch.finfo(torch.float32).min)`` in a
    helper that receives its scores: the author names float32, and nothing
    shows the tensor may be float16 (medium); on attention scores made right
    there (a matmul) or normalised by a softmax it raises in float16 (high),
    as does ``-1e9`` anywhere."""
    def confidence(body):
        return [f.confidence for f in lint("import torch\n" + body, ["NL003"])]
    helper = "def _compact(valid, scores):\n    return scores.masked_fill(~valid, {fill})\n"
    assert confidence(helper.format(fill="torch.finfo(torch.float32).min")) == ["medium"]
    assert confidence(helper.format(fill="-1e9")) == ["high"]
    scores = ("def attend(q, k, m):\n    s = q @ k.transpose(-1, -2)\n"
              "    return s.masked_fill(~m, torch.finfo(torch.float32).min).softmax(-1)\n")
    assert confidence(scores) == ["high"]
    softmaxed = ("def relative(content, position, pad):\n    s = content + position\n"
                 "    s = s.masked_fill(pad, torch.finfo(torch.float32).min)\n    return s.softmax(-1)\n")
    assert confidence(softmaxed) == ["high"]


def test_one_minus_a_real_value_is_not_an_inverted_mask():
    """``(1 - m) * -1e9`` inverts a mask; times a large *positive*
    coefficient, ``1 - s`` is a mask only where ``s`` is evidently 0/1 (a
    comparison, a cast of one): otherwise it is a spline's arithmetic."""
    def found(make, coefficient="1e9"):
        return lint("import torch\n"
                    "def f(scores, ids, s):\n"
                    f"    keep = {make}\n"
                    f"    bias = (1 - keep) * {coefficient}\n"
                    "    return torch.softmax(scores - bias, -1)\n", ["NL003"])
    assert [f.line for f in found("(ids != 0).type_as(scores)")] == [4]
    assert [f.line for f in found("ids.ne(0).to(scores.dtype)")] == [4]
    assert found("s * 0.5") == []
    assert found("s") == []
    assert [f.line for f in found("s", "-1e9")] == [4]


def test_a_finite_fill_of_an_explicit_bfloat16_tensor_is_representable():
    """-1e9 fits bfloat16 (max 3.39e38): no overflow on a tensor cast to bfloat16;
    the same scores cast to half raise on the fill."""
    def found(cast):
        src = (
            "import torch\n"
            "def attend(q, k, pad):\n"
            f"    w = (q @ k.transpose(-1, -2)).{cast}()\n"
            "    w = w.masked_fill(pad, -1e9)\n"
            "    return torch.softmax(w, -1)\n"
        )
        return [f.line for f in lint(src, ["NL003"])]
    assert found("bfloat16") == []
    assert found("half") == [4]


ESPNET_ATTENTION = (
    "import torch\n"
    "def attend(scores, mask, value):\n"
    "    if mask.size(-1) > 0:\n"
    "        mask = mask.unsqueeze(1).eq(0)\n"
    "        scores = scores.masked_fill(mask, -float('inf'))\n"
    "        attn = torch.softmax(scores.float(), dim=-1).type_as(value).masked_fill(mask, 0.0)\n"
    "    else:\n"
    "        attn = torch.softmax(scores.float(), dim=-1).type_as(value)\n"
    "    return attn @ value\n"
)


def test_softmax_zeroed_again_by_the_same_mask_cleans_a_fully_masked_row():
    # ESPnet/wenet attention: the NaN of a fully masked row is filled with 0 by the same mask
    assert lint(ESPNET_ATTENTION, ["NL003"]) == []
    # look-alikes: zeroed by another mask; the scores also go elsewhere; not zeroed
    assert [f.line for f in lint(ESPNET_ATTENTION.replace("masked_fill(mask, 0.0)", "masked_fill(pad, 0.0)"),
                                 ["NL003"])] == [5]
    assert [f.line for f in lint(ESPNET_ATTENTION.replace("return attn @ value", "return attn @ value, scores.max()"),
                                 ["NL003"])] == [5]
    assert [f.line for f in lint(ESPNET_ATTENTION.replace(".masked_fill(mask, 0.0)", ""), ["NL003"])] == [5]


@pytest.mark.parametrize("binding, reported", [
    ("    fill = -1e9\n", True),
    ("    fill: float = float('-inf')\n", True),
    ("    fill = (\n        -100000000.0\n    )\n", True),  # the value goes on over lines
    ("    _, fill = 0, -math.inf\n", True),
    ("    fill = torch.finfo(torch.float32).min\n", True),
    # look-alikes: a representable value; a longer name holds the hazard
    ("    fill = -1e4\n", False),
    ("    prefill = -1e9\n    fill = -100.0\n", False),
])
def test_a_fill_named_in_any_binding_form_is_read(binding, reported):
    """The fill is looked up only where the file binds the name to a value whose
    text may be a hazard: every way of binding it must still be read."""
    src = ("import math\nimport torch\ndef f(s, m):\n" + binding
           + "    return s.masked_fill(m, fill).softmax(-1)\n")
    assert bool(codes(src)) == reported


def test_a_fill_named_by_a_parameter_default_is_read():
    src = "import torch\ndef f(s, m, fill=-1e9):\n    return s.masked_fill(m, fill).softmax(-1)\n"
    assert codes(src) == [3]
