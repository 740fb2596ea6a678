"""NL004 beyond its documented examples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402


def _confidence(src):
    return [f.confidence for f in lint(src, ["NL004"])]


def test_an_adaptive_optimizer_bounds_the_step():
    """Adam's update is about the learning rate whatever the spike: low. SGD
    applies the spike in full: high in a half model."""
    def loop(make):
        return ("import torch\n"
                "def train(model, loader):\n"
                "    model.half()\n"
                f"    optimizer = {make}\n"
                "    for x in loader:\n"
                "        model(x).sum().backward()\n"
                "        optimizer.step()\n")
    assert _confidence(loop("torch.optim.SGD(model.parameters(), lr=0.1)")) == ["high"]
    assert _confidence(loop("torch.optim.AdamW(model.parameters(), lr=1e-4)")) == ["low"]
    assert _confidence(loop("torch.optim.RMSprop(model.parameters())")) == ["low"]
    assert _confidence(loop("build_optimizer(model)")) == ["high"]
    # LARS/LARC scale each layer's step by ||w|| / ||g||: a spike does not grow it
    assert _confidence(loop("LARC(torch.optim.SGD(model.parameters(), lr=0.1), trust_coefficient=0.001)")) == ["low"]
    assert _confidence(loop("LARS(model.parameters(), lr=0.1)")) == ["low"]


def test_an_adaptive_optimizer_held_by_the_class():
    def trainer(make):
        return ("import torch\n"
                "class Trainer:\n"
                "    def __init__(self, model):\n"
                "        self.model = model.half()\n"
                f"        self.opt = {make}\n"
                "    def step(self, loss):\n"
                "        loss.backward()\n"
                "        self.opt.step()\n")
    assert _confidence(trainer("torch.optim.SGD(model.parameters(), lr=0.1)")) == ["high"]
    assert _confidence(trainer("torch.optim.Adam(model.parameters())")) == ["low"]


def test_mixed_precision_steps_float32_weights_and_skips_overflows():
    """Under a GradScaler the scaler skips every step whose gradients overflow and the
    weights it steps are float32: a missing clip is low, whatever the optimizer."""
    for make in ("torch.optim.SGD(model.parameters(), lr=0.1)", "torch.optim.Adam(model.parameters())"):
        src = ("import torch\n"
               "def train(model, loader):\n"
               f"    opt = {make}\n"
               "    scaler = torch.cuda.amp.GradScaler()\n"
               "    for x in loader:\n"
               "        with torch.autocast('cuda'):\n"
               "            loss = model(x).sum()\n"
               "        scaler.scale(loss).backward()\n"
               "        scaler.step(opt)\n"
               "        scaler.update()\n")
        found = lint(src, ["NL004"])
        assert [f.confidence for f in found] == ["low"]
        # an adaptive optimizer gives its own reason, which holds in any precision
        reason = "master weights" if "SGD" in make else "divides by a gradient magnitude"
        assert reason in found[0].message
