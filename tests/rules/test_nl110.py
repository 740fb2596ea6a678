"""NL110: the numbers its docs and messages quote, re-measured with torch, and the
deterministic-mode NaN fill that `nanlint confirm` relies on."""

from __future__ import annotations

import pytest

from nanlint.dtypes import BFLOAT16, FLOAT16

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("facts, dtype", [(FLOAT16, torch.float16), (BFLOAT16, torch.bfloat16)])
def test_nonfinite_fraction_of_bit_patterns(facts, dtype):
    # every 16-bit pattern once: the fraction the rule's message computes from eps
    patterns = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    fraction = (~torch.isfinite(patterns)).float().mean().item()
    assert fraction == pytest.approx(2 / facts.eps / 65536)


def test_deterministic_mode_fills_uninitialised_memory_with_nan():
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert torch.utils.deterministic.fill_uninitialized_memory
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            assert torch.isnan(torch.nn.Parameter(torch.empty(3, 4, dtype=dtype))).all()
        assert torch.isnan(torch.Tensor(3, 4)).all()
        assert torch.isnan(torch.FloatTensor(2, 2)).all()
        assert torch.isnan(torch.empty_like(torch.zeros(5))).all()
        linear = torch.nn.utils.skip_init(torch.nn.Linear, 4, 4)
        assert torch.isnan(linear.weight).all()
        meta = torch.nn.Linear(4, 4, device="meta").to_empty(device="cpu")
        assert torch.isnan(meta.weight).all()
    finally:
        torch.use_deterministic_algorithms(previous)
