"""Measured limits of the low-precision dtypes nanlint targets.

The numbers are those of ``torch.finfo`` and of measurements on CPU with torch
2.13 (see the rule docs); they are written out here so that static linting never
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class DtypeFacts:
    name: str
    max: float  # largest finite value
    tiny: float  # smallest normal value (finfo.tiny)
    subnormal: float  # smallest positive subnormal
    zero_below: float  # positive literals below this round to 0
    eps: float  # spacing at 1.0 (finfo.eps)
    exp_overflow: float  # exp(x) is inf for x above this
    recip_overflow: float  # 1/x is inf for 0 < x below this


FLOAT16 = DtypeFacts(
    name="float16",
    max=65504.0,
    tiny=6.103515625e-05,
    subnormal=5.960464477539063e-08,
    zero_below=2.9802322387695312e-08,
    eps=0.0009765625,
    exp_overflow=11.09,
    recip_overflow=1.53e-05,
)

BFLOAT16 = DtypeFacts(
    name="bfloat16",
    max=3.3895313892515355e38,
    tiny=1.1754943508222875e-38,
    subnormal=9.183549615799121e-41,
    zero_below=4.591774807899561e-41,
    eps=0.0078125,
    exp_overflow=88.7,
    recip_overflow=2.9e-39,
)

FLOAT32_MAX = 3.4028234663852886e38

DTYPES: Dict[str, DtypeFacts] = {d.name: d for d in (FLOAT16, BFLOAT16)}


def targets_float16(dtypes) -> bool:
    """Whether float16 is among the target dtypes (a float16-only rule runs only then)."""
    return any(d.name == FLOAT16.name for d in dtypes)


def fmt(value: float) -> str:
    """Format a number the way the rule messages and docs quote them (3 significant digits)."""
    if value == 0:
        return "0"
    if value == int(value) and abs(value) < 1e7:
        return str(int(value))
    if 1e-3 <= abs(value) < 1e5:
        text = f"{value:.4g}"
    else:
        text = f"{value:.3g}"
    return text.replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
