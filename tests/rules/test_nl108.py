"""NL108 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402

from nanlint.rules.nl108_fp16_overflow_literal import ROUNDS_TO_INF, TINY_DIVISOR  # noqa: E402


def test_thresholds_match_measurements():
    # measured with torch 2.13: 65519 -> 65504, 65520 -> inf in float16; 1/65504 = 1.527e-5
    assert 65519 < ROUNDS_TO_INF <= 65520
    assert 1.52e-5 < TINY_DIVISOR < 1.53e-5


def test_inactive_for_bfloat16_only():
    src = "import torch\ny = torch.softmax(x, -1) * 1e5\n"
    assert lint(src, ["NL108"], dtypes=("bfloat16",)) == []
    assert len(lint(src, ["NL108"])) == 1


def test_quiet_where_nl003_reports():
    src = (
        "import torch\n"
        "def f(scores, mask):\n"
        "    a = scores.masked_fill(mask, 1e9)\n"
        "    b = torch.where(mask, scores, -1e9)\n"
        "    scores[mask] = -1e9\n"
        "    return a + b + (1 - mask.to(scores.dtype)) * -1e9\n"
    )
    assert lint(src, ["NL108"]) == []
    assert len(lint(src, ["NL003"])) == 4
    # a mask product known to be float32 holds -1e9: neither rule reports it
    wide = "import torch\ndef f(mask):\n    return (1 - mask.float()) * -1e9\n"
    assert lint(wide, ["NL108"]) == lint(wide, ["NL003"]) == []


def test_integer_literal_needs_a_floating_tensor():
    assert lint("import torch\ndef f(ids: torch.Tensor):\n    return ids * 1000003\n", ["NL108"]) == []
    assert len(lint("import torch\ndef f(x):\n    return torch.sigmoid(x) * 100000\n", ["NL108"])) == 1


def test_list_of_mixed_dtype_state_is_unknown():
    src = (
        "import torch\n"
        "def f(h):\n"
        "    state = [torch.zeros(3, dtype=h.dtype if i <= 1 else torch.float32) for i in range(5)]\n"
        "    state[4] -= 1e30\n"
        "    return torch.cat(state)\n"
    )
    assert lint(src, ["NL108"]) == []


def test_a_bound_on_a_tensor_made_float32_further_up_is_quiet():
    """``out = out[0].to(torch.float32); sel = out[a:b]; sel / sel.norm().clip(1e-8, 1e8)``:
    the shared dtype facts follow the cast through indexing and ``norm``."""
    def found(cast):
        return lint(
            "import torch\ndef render(out, a, b):\n"
            f"    out = out[0]{cast}\n"
            "    sel = out[a:b]\n"
            "    img = sel\n"
            "    return img / img.norm(float('inf'), dim=[1, 2], keepdim=True).clip(1e-8, 1e8)\n",
            ["NL108"],
        )
    assert found(".to(torch.float32)") == []
    assert found(".float()") == []
    assert [f.code for f in found(".half()")] == ["NL108"]


def test_moving_a_float32_factory_to_a_device_keeps_it_float32():
    """``torch.ones(B, N).to(device) * 1e10`` (farthest point sampling) is
    float32 wherever it runs; ``.to(x)`` takes another tensor's dtype."""
    def found(move):
        return lint(
            "import torch\ndef fps(xyz, B, N):\n"
            "    device = xyz.device\n"
            f"    distance = torch.ones(B, N){move} * 1e10\n"
            "    return distance\n",
            ["NL108"],
        )
    assert found(".to(device)") == []
    assert found(".to('cuda')") == []
    assert found(".to(xyz.device)") == []
    assert found(".to(device=device)") == []
    assert [f.line for f in found(".to(xyz)")] == [4]


def test_a_parameters_gradient_is_float32_unless_the_model_is_cast_to_half():
    """EDM: ``torch.nan_to_num(p.grad, posinf=1e5, out=p.grad)`` for every
    parameter: under AMP or float32 training the gradient is float32 (low);
    in a file that casts the model to half it is float16 (high)."""
    loop = (
        "import torch\ndef step(net, opt):\n"
        "    for p in net.parameters():\n"
        "        if p.grad is not None:\n"
        "            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)\n"
        "    opt.step()\n"
    )
    assert {f.confidence for f in lint(loop, ["NL108"])} == {"low"}
    assert {f.confidence for f in lint(loop + "net = Net().half()\n", ["NL108"])} == {"high"}
    # an activation is not a gradient
    other = loop.replace("torch.nan_to_num(p.grad,", "torch.nan_to_num(p.data * 2,")
    assert {f.confidence for f in lint(other, ["NL108"])} <= {"high"}


def test_the_indices_of_a_max_or_topk_are_integers():
    """``x.half().max(-1)[1]`` is int64 (times 1e5 it is float32); ``[0]``
    holds the float16 values."""
    def found(index):
        return lint(f"import torch\ndef f(x):\n    return x.half().max(-1)[{index}] * 1e5\n", ["NL108"])
    assert found(1) == []
    assert [f.line for f in found(0)] == [3]


def test_arange_without_a_dtype_is_never_float16():
    """``torch.arange(n)`` is int64 (or float32 for a float bound) whatever
    ``n`` is, so a distance-in-sequence penalty built from it is float32;
    with ``dtype=`` the range takes that dtype."""
    def found(make):
        return lint("import torch\n"
                    "def f(D, mask, n):\n"
                    f"    pos = {make}\n"
                    "    dseq = torch.abs(pos.unsqueeze(1) - pos.unsqueeze(0))\n"
                    "    return D + (~mask) * (1e8 + dseq * 1e6)\n", ["NL108"])
    assert found("torch.arange(n, device=D.device)") == []
    assert found("torch.arange(0.5, n)") == []
    assert [f.line for f in found("torch.arange(n, dtype=D.dtype)")] == [5, 5]


def test_a_sentinel_that_is_only_sorted():
    """A ``where`` sentinel that only a sort (or min/max/topk) reads orders
    the same as inf; read by arithmetic or ``exp`` it is an overflow."""
    def found(use):
        return lint("import torch\n"
                    "def f(x):\n"
                    "    d = x[1:] - x[:-1]\n"
                    "    d = torch.where(d.eq(0), torch.tensor(1e10, dtype=x.dtype, device=x.device), d)\n"
                    f"    return {use}\n", ["NL108"])
    assert found("d.sort(dim=-2)[0]") == []
    assert found("torch.topk(d, 3, largest=False)") == []
    assert [f.line for f in found("d.sum()")] == [4]
    assert [f.line for f in found("d.exp().max()")] == [4]


def test_legacy_typed_tensor_classes_name_their_dtype():
    """``torch.cuda.FloatTensor(B, N)`` is float32 (a farthest-point
    sampler's 1e10 scratch buffer); a buffer made like the input is not."""
    def found(make):
        return lint(f"import torch\ndef f(x, B, N):\n    return {make}.fill_(1e10)\n", ["NL108"])
    assert found("torch.cuda.FloatTensor(B, N)") == []
    assert found("torch.DoubleTensor(B, N)") == []
    assert [f.line for f in found("x.new_zeros(B, N)")] == [3]


def test_what_a_decomposition_returns_is_never_float16():
    # linalg decompositions and solvers raise on float16 ("not implemented for 'Half'")
    source = (
        "import torch\n"
        "def _decompose(a, b):\n"
        "    e_val, e_vec = torch.linalg.eigh(torch.inverse(b) @ a)\n"
        "    return e_val, e_vec\n"
        "def beamform(a, b):\n"
        "    w, v = torch.linalg.eigh(a)\n"
        "    x = torch.clamp(w, max=1e6)\n"
        "    e, vec = _decompose(a, b)\n"
        "    y = torch.clamp(e, max=1e6)\n"
        "    z = torch.linalg.svdvals(a).clamp(max=1e6)\n"
        "    m, i = torch.max(a, -1)\n"
        "    t = torch.clamp(m, max=1e6)\n"
        "    u = torch.linalg.matrix_exp(a).clamp(max=1e6)\n"
        "    return x, y, z, t, u, vec\n"
    )
    # the max's values and matrix_exp keep their input's dtype: those two stay
    assert [f.line for f in lint(source, ["NL108"])] == [12, 13]


def test_an_explicit_bfloat16_tensor_has_float32s_range():
    """A poison fill of 1e30 into a tensor made as bfloat16 (max 3.39e38) is
    finite; the same fill into float16, or into a tensor of unknown dtype, raises."""
    def found(dtype_line):
        src = (
            "import torch\n"
            "def make(rows, n):\n"
            f"    {dtype_line}\n"
            "    t = torch.randn(rows, n, dtype=dtype)\n"
            "    t[n:].fill_(1e30)\n"
            "    return t\n"
        )
        return [f.line for f in lint(src, ["NL108"])]
    assert found("dtype = torch.bfloat16") == []
    assert found("dtype = torch.float16") == [5]
    assert found("dtype = pick_dtype()") == [5]
    src = "import torch\nt = torch.zeros(4).bfloat16()\nt.fill_(1e30)\nu = torch.zeros(4).half()\nu.fill_(1e30)\n"
    assert [f.line for f in lint(src, ["NL108"])] == [5]


def test_a_bfloat16_parameter_default_is_not_the_dtype_callers_pass():
    src = (
        "import torch\n"
        "def make(rows, n, dtype=torch.bfloat16):\n"
        "    t = torch.randn(rows, n, dtype=dtype)\n"
        "    t.fill_(1e30)\n"
        "    return t\n"
    )
    assert [f.line for f in lint(src, ["NL108"])] == [4]


SEARCH = (
    "import torch\n"
    "def search(x, steps, loss_fn):\n"
    "    lo, hi = x.amin(-1), x.amax(-1)\n"
    "    best = torch.zeros_like(lo) + 1e9\n"
    "    for i in range(1, steps + 1):\n"
    "        t = hi / steps * i\n"
    "        loss = loss_fn(x, -t, t)\n"
    "        lo = torch.where(loss < best, -t, lo)\n"
    "        best = torch.min(loss, best)\n"
    "    return {}\n"
)


def test_a_running_minimums_start_that_only_meets_comparisons_is_harmless():
    """torchao's clip search: `best` starts at 1e9 (inf in float16) and only ever
    meets `loss < best` and `torch.min(loss, best)`, fed back on the next
    iteration; inf compares as 1e9 does. Returned, it is a finding."""
    assert lint(SEARCH.format("lo"), ["NL108"]) == []
    assert [f.line for f in lint(SEARCH.format("lo, best"), ["NL108"])] == [4]
    # the loop-carried value read at the top of the next iteration counts too
    assert [f.line for f in lint(SEARCH.format("lo").replace("loss < best", "loss < best * x"), ["NL108"])] == [4]
