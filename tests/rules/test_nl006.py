"""NL006 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402

from nanlint.dtypes import BFLOAT16, FLOAT16  # noqa: E402
from nanlint.rules.nl006_tanh_gate import dead_below  # noqa: E402


def test_dead_thresholds_match_measurements():
    # measured with torch 2.13 on CPU: 1 + tanh(b) == 0 from b = -4.5078 (float16), -3.469 (bfloat16)
    assert -4.51 < dead_below(FLOAT16) < -4.50
    assert -3.48 < dead_below(BFLOAT16) < -3.46


def test_message_quotes_each_target_dtype():
    [f] = lint("import torch\ny = x * (1 + torch.tanh(b))\n", ["NL006"], dtypes=("float16", "bfloat16"))
    assert "float16: b <= -4.51" in f.message and "bfloat16: b <= -3.47" in f.message


def test_gate_through_a_tanh_name_has_no_fix():
    [f] = lint("import torch\nt = torch.tanh(h @ w)\ny = (1 + t) * v\n", ["NL006"])
    assert f.fix is None


def test_parameter_shadows_module_gate():
    src = "import torch\ngate = 1 + torch.tanh(z)\ndef f(x, gate):\n    return x * gate\n"
    assert lint(src, ["NL006"]) == []
