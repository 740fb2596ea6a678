"""NL106 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import fix_all, lint  # noqa: E402


def test_clip_inside_try_gets_no_fix():
    # if the clip raises, the handler skips the step: a second unscale_ next time would raise
    src = (
        "import torch\n"
        "def f(model, loss, opt, scaler):\n"
        "    scaler.scale(loss).backward()\n"
        "    try:\n"
        "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)\n"
        "    except RuntimeError:\n"
        "        return\n"
        "    scaler.step(opt)\n"
    )
    [f] = lint(src, ["NL106"])
    assert f.fix is None


def test_unscale_through_another_name_counts():
    src = (
        "import torch\n"
        "def f(self, model, loss, opt):\n"
        "    scaler = self.scaler\n"
        "    scaler.scale(loss).backward()\n"
        "    self.scaler.unscale_(opt)\n"
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    scaler.step(opt)\n"
    )
    assert lint(src, ["NL106"]) == []


def test_fix_inserts_one_unscale_for_the_loop():
    src = (
        "import torch\n"
        "def f(model, batches, opt, scaler):\n"
        "    for loss in batches:\n"
        "        scaler.scale(loss).backward()\n"
        "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "        torch.nn.utils.clip_grad_value_(model.parameters(), 5.0)\n"
        "        scaler.step(opt)\n"
        "        scaler.update()\n"
    )
    assert len(lint(src, ["NL106"])) == 2
    fixed = fix_all(src, ["NL106"])
    assert fixed.count("scaler.unscale_(opt)") == 1
    assert lint(fixed, ["NL106"]) == []


def test_scaler_named_by_its_step():
    src = (
        "import torch\n"
        "def f(model, loss, opt, amp):\n"
        "    amp.scale(loss).backward()\n"
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    amp.step(opt)\n"
    )
    [f] = lint(src, ["NL106"])
    assert "1/65536 = 1.53e-5" in f.message


def test_image_scale_is_not_a_scaler():
    src = (
        "import torch\n"
        "def f(model, img, opt):\n"
        "    img.scale(2).backward()\n"
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    opt.step()\n"
    )
    assert lint(src, ["NL106"]) == []
