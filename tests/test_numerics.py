"""The float16/bfloat16 numbers that rule messages quote and fixes rely on,
re-measured with torch (skipped where torch is not installed)."""

from __future__ import annotations

import math

import pytest

from nanlint.dtypes import BFLOAT16, FLOAT16

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("facts, dtype", [(FLOAT16, "float16"), (BFLOAT16, "bfloat16")])
def test_dtype_facts_match_torch(facts, dtype):
    dt = getattr(torch, dtype)
    info = torch.finfo(dt)
    assert facts.max == pytest.approx(info.max)
    assert facts.tiny == pytest.approx(info.tiny)
    assert facts.eps == pytest.approx(info.eps)
    smallest = torch.tensor(facts.subnormal, dtype=dt)
    assert smallest.item() == pytest.approx(facts.subnormal) and smallest.item() > 0
    assert torch.tensor(facts.zero_below * 0.99, dtype=dt).item() == 0
    # exp overflows just above exp_overflow
    below = torch.tensor(facts.exp_overflow - 0.02, dtype=dt)
    above = torch.tensor(facts.exp_overflow + 0.05, dtype=dt)
    assert torch.isfinite(torch.exp(below)) and torch.isinf(torch.exp(above))


def test_float16_rounding_facts():
    half = lambda v: torch.tensor(v, dtype=torch.float16).item()  # noqa: E731
    assert half(1e-12) == 0 and half(1e-8) == 0 and half(FLOAT16.zero_below * 0.99) == 0
    assert half(1e-7) > 0
    assert torch.isinf(torch.tensor(1.0, dtype=torch.float16) / torch.tensor(FLOAT16.recip_overflow * 0.99, dtype=torch.float16))
    assert torch.isfinite(torch.tensor(1.0, dtype=torch.float16) / torch.tensor(FLOAT16.recip_overflow * 1.01, dtype=torch.float16))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_nl002_fix_bound_keeps_exp_finite_and_exact_bound_does_not(dtype):
    dt = getattr(torch, dtype)
    x = torch.tensor([0.0, 5.0, 11.0, 11.09, 20.0, 100.0, 1e4], dtype=dt)
    fixed = torch.exp(x.clamp(max=math.log(torch.finfo(x.dtype).max) - 0.01))
    assert torch.isfinite(fixed).all()
    # in-range values are unchanged
    small = x < math.log(torch.finfo(x.dtype).max) - 0.01
    assert torch.equal(fixed[small], torch.exp(x[small]))
    if dtype in ("float16", "float32"):
        # the bound without the margin rounds up when cast to the dtype: exp is inf
        naive = torch.exp(x.clamp(max=math.log(torch.finfo(x.dtype).max)))
        assert torch.isinf(naive).any()
