"""nanlint.analysis.safeguards: safeguards that live elsewhere than the line
(clipping in helpers, weights from checkpoints, float16 in play), seen as a
user sees them: the CLI on files."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import libcst as cst
import pytest

from helpers import ROOT
from nanlint.analysis.safeguards import summarize


def _check(tmp_path, source, code, name="train.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "nanlint", "check", "--no-cache", "--select", code, "--min-confidence", "low",
         "--output-format", "json", "--exit-zero", str(path)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [(f["line"], f["confidence"]) for f in json.loads(proc.stdout)]


def _helper_chain(depth, style, clips):
    """A training step whose clipping is `depth` helper calls away, through
    methods of the class (`self`), of a base class (`base`) or module
    functions (`module`); the innermost helper clips only when `clips`."""
    inner = "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)" if clips else "print(model)"
    lines = ["import torch", ""]
    if style == "module":
        for level in range(depth):
            body = inner if level == depth - 1 else f"helper{level + 1}(model)"
            lines += [f"def helper{level}(model):", f"    {body}", ""]
        call = "helper0(self.model)"
        lines += ["class Trainer:"]
    else:
        owner = "Base" if style == "base" else "Trainer"
        if style == "base":
            lines += ["class Base:"]
        else:
            lines += ["class Trainer:"]
        for level in range(depth):
            body = inner if level == depth - 1 else f"self.helper{level + 1}()"
            lines += [f"    def helper{level}(self):", "        model = self.model", f"        {body}", ""]
        call = "self.helper0()"
        if owner == "Base":
            lines += ["class Trainer(Base):"]
    lines += [
        "    def __init__(self, model):",
        "        self.model = model.half()",
        "        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)",
        "",
        "    def run_step(self, batch):",
        "        self.model(batch).mean().backward()",
        f"        {call}",
        "        self.optimizer.step()",
        "",
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("depth,style", list(itertools.product((1, 2, 3), ("self", "base", "module"))))
def test_a_clip_in_a_helper_is_found_at_any_depth(tmp_path, depth, style):
    clipped = _helper_chain(depth, style, clips=True)
    assert _check(tmp_path, clipped, "NL004") == []
    # the same chain without the clip at its end: a float16 model, so shown by default
    unclipped = _helper_chain(depth, style, clips=False)
    step_line = unclipped.splitlines().index("        self.optimizer.step()") + 1
    assert _check(tmp_path, unclipped, "NL004") == [(step_line, "high")]


def test_recursive_helpers_end(tmp_path):
    source = """\
        import torch
        def a(model):
            b(model)
        def b(model):
            a(model)
        def train(model, x):
            model = model.half()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            model(x).sum().backward()
            a(model)
            opt.step()
        """
    assert _check(tmp_path, source, "NL004") == [(11, "high")]


@pytest.mark.parametrize("value,reported", [("cfg.max_norm", False), ("1.0", False), ("None", True), ("0", True)])
def test_a_clipping_setting_handed_on_counts_unless_switched_off(tmp_path, value, reported):
    source = f"""\
        import torch
        def train(model, x, cfg):
            model = model.half()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            model(x).sum().backward()
            sync(model, max_norm={value})
            opt.step()
        """
    assert _check(tmp_path, source, "NL004") == ([(7, "high")] if reported else [])


@pytest.mark.parametrize("setup,confidence,mixed", [
    ("model = model.half()", "high", False),
    ("model = model.to(dtype=torch.float16)", "high", False),
    # mixed precision: float32 master weights, overflowing steps skipped (low, and says so)
    ("scaler = torch.amp.GradScaler('cuda')", "low", True),
    ("ctx = torch.autocast('cuda', dtype=torch.float16)", "low", True),
    ("ctx = torch.autocast('cuda', dtype=torch.bfloat16)", "low", False),
    ("pass", "low", False),
])
def test_confidence_follows_the_float16_evidence(tmp_path, setup, confidence, mixed):
    source = f"""\
        import torch
        def train(model, x):
            {setup}
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            model(x).sum().backward()
            opt.step()
        """
    assert _check(tmp_path, source, "NL004") == [(6, confidence)]
    proc = subprocess.run(
        [sys.executable, "-m", "nanlint", "check", "--no-cache", "--select", "NL004", "--min-confidence", "low",
         "--output-format", "json", "--exit-zero", str(tmp_path / "train.py")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert ("float32 master weights" in json.loads(proc.stdout)[0]["message"]) == mixed


def test_a_benchmark_loop_is_low(tmp_path):
    source = """\
        import torch
        model = model.half()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(10):
            model(x).sum().backward()
            opt.step()
        """
    assert _check(tmp_path, source, "NL004", name="train.py") == [(6, "high")]
    assert _check(tmp_path, source, "NL004", name="bench.py") == [(6, "low")]


def test_summary_is_a_function_of_the_functions_own_source():
    """What another module's summary needs: parse the function alone."""
    module = cst.parse_module(textwrap.dedent("""\
        def step(self, model):
            def inner():
                clip_all(model)
            inner()
            self._sync()
            self.optimizer.zero_grad()
        """))
    func = module.body[0]
    summary = summarize(func)
    assert summary.clips is False
    assert {"clip_all", "inner", "self._sync"} <= summary.calls
    assert "self.optimizer.zero_grad" not in summary.calls
    clipping = cst.parse_module("def f(p):\n    p.grad.clamp_(-1, 1)\n").body[0]
    assert summarize(clipping).clips is True


def test_checkpoint_models_and_their_layers_are_low(tmp_path):
    source = """\
        import torch
        from torch import nn
        from diffusers import ModelMixin

        class Inner(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.w = nn.Parameter(torch.empty(d))

        class Shared(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.w = nn.Parameter(torch.empty(d))

        class Model(ModelMixin):
            def __init__(self, d):
                super().__init__()
                self.inner = Inner(d)
                self.shared = Shared(d)

        def build(d):
            return Shared(d)
        """
    # Shared is also built outside the checkpoint model: nothing fills it there
    assert _check(tmp_path, source, "NL110") == [(8, "low"), (13, "high")]


def test_list_element_init_counts(tmp_path):
    source = """\
        import torch
        from torch import nn

        class M(nn.Module):
            def __init__(self, sizes, d):
                super().__init__()
                self.embs = nn.ParameterList()
                for i, n in enumerate(sizes):
                    self.embs.append(nn.Parameter(torch.FloatTensor(n, d)))
                    {init}
        """
    assert _check(tmp_path, source.replace("{init}", "nn.init.uniform_(self.embs[i])"), "NL110") == []
    assert _check(tmp_path, source.replace("{init}", "pass"), "NL110") == [(9, "high")]
