"""`nanlint confirm` where it used to look clean (exit 0) or point at the wrong
line: a model made only of torch's classes, a hazard only the model's eval
path has, an underflow whose zeros break a later line, and the float32
reference run that tells "float16 broke this" from "broken in any precision".

Each model is written to a temporary file with a twin that must stay quiet;
all command lines run in parallel on first use (each imports torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent

MODELS = {
    # a bare nn.MultiheadAttention: one sequence is padding only, so every key
    # of its rows is masked and the softmax is 0/0 (in float32 too)
    "mha_padded": """
        import torch
        from torch import nn
        import nanlint


        def make():
            torch.manual_seed(0)
            attention = nn.MultiheadAttention(16, 2, batch_first=True)
            x = torch.randn(2, 5, 16)
            padding = torch.zeros(2, 5, dtype=torch.bool)
            padding[0] = True
            return nanlint.Target(model=attention, inputs={"query": x, "key": x, "value": x,
                                                           "key_padding_mask": padding})
    """,
    # torch classes only, nested: the innermost module running is named
    "sequential": """
        import torch
        from torch import nn
        import nanlint


        def make():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 4))
            with torch.no_grad():
                model[2].weight.fill_(20000.0)  # eight sigmoids of about 0.5: about 80000
            return nanlint.Target(model=model, inputs=torch.randn(3, 8))
    """,
    # the hazard is on the inference path only: a temperature of 1e-8 is 0 in float16
    "eval_only": """
        import torch
        from torch import nn
        import nanlint


        class Calibrated(nn.Module):
            def __init__(self, temperature):
                super().__init__()
                self.proj = nn.Linear(8, 4)
                self.register_buffer("temperature", torch.tensor(temperature))

            def forward(self, x):
                logits = self.proj(x)
                if self.training:
                    return logits
                return logits / self.temperature


        def make():
            torch.manual_seed(0)
            return Calibrated(TEMPERATURE), torch.randn(3, 8)


        TEMPERATURE = 1e-8
    """,
    # SAC's actor late in training: exp(log_std) underflows to 0 in float16,
    # and Normal.log_prob's log and division turn the zeros into inf/NaN
    "sac": """
        import torch
        from torch import nn
        from torch.distributions import Normal
        import nanlint


        class Actor(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Linear(4, 16)
                self.mean = nn.Linear(16, 2)
                self.log_std = nn.Linear(16, 2)

            def forward(self, obs):
                h = torch.relu(self.body(obs))
                mean = self.mean(h)
                log_std = self.log_std(h).clamp(LOW, 2)
                std = log_std.exp()
                dist = Normal(mean, std, validate_args=False)
                action = dist.rsample()
                return dist.log_prob(action).sum(-1)


        def make():
            torch.manual_seed(0)
            actor = Actor()
            with torch.no_grad():
                actor.log_std.bias.fill_(-19.0)  # a near-deterministic policy
                actor.log_std.weight.mul_(0.01)
            return nanlint.Target(model=actor, inputs=torch.randn(8, 4),
                                  loss_fn=lambda out, inputs: -out.float().mean())


        LOW = -20
    """,
    # token ids only: exp of a sum of the embeddings overflows float16 once
    # the embeddings have grown tenfold (the scaled regimes scale them)
    "tokens": """
        import torch
        from torch import nn


        class Energy(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(10, 8)

            def forward(self, ids):
                h = self.emb(ids)
                return EXP


        def make():
            torch.manual_seed(0)
            return Energy(), torch.tensor([[1, 2, 3]])


        EXP = None
    """,
    # a siamese angle: acos of the cosine of two embeddings; the same input
    # twice makes the cosine 1 (or above by rounding), where acos' derivative is inf
    "siamese_base": """
        import torch
        from torch import nn
        import torch.nn.functional as F
        import nanlint


        class Angle(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Linear(8, 16)

            def forward(self, a, b):
                cosine = F.cosine_similarity(self.embed(a), self.embed(b), dim=-1)
                return torch.acos(COSINE)


        def make():
            torch.manual_seed(0)
            return nanlint.Target(model=Angle(), inputs=(torch.randn(4, 8), torch.randn(4, 8)),
                                  loss_fn=lambda out, inputs: out.float().mean())


        COSINE = None
    """,
}
# twins that differ by one constant
VARIANTS = {
    # the padded sequence keeps keys (its last two positions only are padding)
    "mha_padded_fixed": ("mha_padded", "padding[0] = True", "padding[0, 3:] = True"),
    "eval_only_fixed": ("eval_only", "TEMPERATURE = 1e-8", "TEMPERATURE = 0.5"),
    "sac_fixed": ("sac", "LOW = -20", "LOW = -5"),  # exp(-5) = 6.7e-3 is a normal float16
}
SIAMESE = {
    "siamese": "cosine",
    "siamese_fixed": "cosine.clamp(-1 + 1e-3, 1 - 1e-3)",
}
TOKENS = {
    "tokens_exp": "torch.exp(h.sum(-1))",
    "tokens_exp_fixed": "torch.exp(h.sum(-1).clamp(max=11.0))",
}
RUNS = {
    "mha_padded": ["--regimes", "example,eval"],
    "mha_padded_fixed": ["--regimes", "example,eval"],
    "sequential": ["--regimes", "example"],
    "eval_only": ["--regimes", "example,eval"],
    "eval_only_fixed": ["--regimes", "example,eval"],
    "sac": ["--regimes", "example,eval"],
    "sac_fixed": ["--regimes", "example,eval"],
    "siamese": ["--regimes", "example,identical-pair"],
    "siamese_fixed": ["--regimes", "example,identical-pair"],
    "tokens_exp": ["--regimes", "-train"],
    "tokens_exp_fixed": ["--regimes", "-train"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("blind")
    sources = {name: textwrap.dedent(body).lstrip("\n") for name, body in MODELS.items()}
    for name, (base, old, new) in VARIANTS.items():
        assert old in sources[base]
        sources[name] = sources[base].replace(old, new)
    for name, expression in TOKENS.items():
        sources[name] = sources["tokens"].replace("return EXP", f"return {expression}")
    del sources["tokens"]
    for name, expression in SIAMESE.items():
        sources[name] = sources["siamese_base"].replace("torch.acos(COSINE)", f"torch.acos({expression})")
    del sources["siamese_base"]
    for name, text in sources.items():
        (tmp / f"{name}.py").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(name: str):
        cmd = [sys.executable, "-m", "nanlint", "confirm", f"{name}.py:make", "--device", "cpu",
               "--output-format", "json", *RUNS[name]]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
        return proc

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(RUNS, pool.map(run, RUNS)))
    out = {}
    for name, proc in procs.items():
        assert "Traceback" not in proc.stderr, proc.stderr
        out[name] = (proc.returncode, json.loads(proc.stdout), sources[name])
    return out


def _line(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def test_a_bare_torch_module_is_reported_at_the_line_that_built_it(results):
    code, report, source = results["mha_padded"]
    assert code == 1, report
    (entry,) = report["entries"]
    assert entry["status"] == "unflagged"
    assert entry["line"] == _line(source, "nn.MultiheadAttention(")
    assert entry["event"] == "new-nan"
    assert "torch.nn.MultiheadAttention" in entry["message"]
    assert "shown at the line that built it" in entry["message"]
    # a fully padded row is 0/0 in any precision
    assert entry["float32"] is True
    assert entry["regimes"] == ["example", "eval"]


def test_a_bare_torch_module_with_keys_left_is_quiet(results):
    code, report, _ = results["mha_padded_fixed"]
    assert code == 0, report
    assert report["entries"] == []
    assert report["regimes"] == ["example", "eval"]


def test_the_innermost_torch_module_is_named(results):
    code, report, source = results["sequential"]
    assert code == 1, report
    (entry,) = report["entries"]
    assert entry["line"] == _line(source, "nn.Sequential(")
    assert entry["event"] == "new-inf" and entry["regime"] == "example"
    assert "model.2 (torch.nn.Linear)" in entry["message"]
    # above 65504: inf in float16 only
    assert entry["float32"] is False


def test_the_eval_regime_runs_the_inference_path(results):
    code, report, source = results["eval_only"]
    assert code == 1, report
    (entry,) = report["entries"]
    assert (entry["status"], entry["regime"], entry["event"]) == ("unflagged", "eval", "new-inf")
    assert entry["line"] == _line(source, "return logits / self.temperature")
    assert entry["float32"] is False  # 1e-8 is 0 only in float16
    code, report, _ = results["eval_only_fixed"]
    assert code == 0 and report["entries"] == [], report


def test_an_underflow_is_reported_where_it_happens_not_where_it_breaks(results):
    code, report, source = results["sac"]
    assert code == 1, report
    (entry,) = report["entries"]
    assert entry["line"] == _line(source, "std = log_std.exp()")
    assert (entry["event"], entry["op"]) == ("underflow", "exp")
    assert f"at line {_line(source, 'return dist.log_prob')}" in entry["message"]
    assert entry["float32"] is False
    assert entry["regimes"] == ["example", "eval"]
    code, report, _ = results["sac_fixed"]
    assert code == 0 and report["entries"] == [], report


def test_a_model_built_in_eval_mode_gets_no_eval_regime(tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn


        def make():
            return nn.Linear(4, 4).eval(), torch.randn(2, 4)
    """))
    proc = subprocess.run([sys.executable, "-m", "nanlint", "confirm", "m.py:make", "--device", "cpu",
                           "--output-format", "json", "--regimes", "example,eval"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["regimes"] == ["example"]


def test_token_ids_get_the_scaled_regimes_on_their_embeddings(results):
    code, report, source = results["tokens_exp"]
    assert code == 1, report
    # zeros and near-zero do not apply: no token has a zero embedding
    assert report["regimes"] == ["example", "eval", "scaled-x10", "scaled-x100", "scaled-x1000"]
    assert report["notes"] == ["the inputs are token ids: scaled-x10, scaled-x100, scaled-x1000 applied to the "
                               "output of the model's 1 embedding layer"]
    entries = [e for e in report["entries"] if e["status"] in ("confirmed", "unflagged")]
    assert entries and all(e["line"] == _line(source, "return torch.exp(") for e in entries), entries
    assert entries[0]["regime"] == "scaled-x10" and entries[0]["float32"] is False
    code, report, _ = results["tokens_exp_fixed"]
    assert code == 0, report
    assert not [e for e in report["entries"] if e["status"] in ("confirmed", "unflagged")]


def test_a_model_that_cannot_be_copied_gets_a_note_instead_of_a_reference(tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import threading

        import torch
        from torch import nn


        class Locked(nn.Module):
            def __init__(self):
                super().__init__()
                self.lock = threading.Lock()  # deepcopy cannot copy a lock

            def forward(self, x):
                return x / (x - x)


        def make():
            return Locked(), torch.ones(2, 3)
    """))
    proc = subprocess.run([sys.executable, "-m", "nanlint", "confirm", "m.py:make", "--device", "cpu",
                           "--output-format", "json", "--regimes", "example"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    [entry] = report["entries"]
    assert entry["event"] == "new-inf" and entry["float32"] is None  # 1 / 0
    [note] = report["notes"]
    assert note.startswith("no float32 reference run: the model cannot be copied (TypeError: "), note


def test_the_eval_regime_restores_each_modules_own_mode():
    import torch
    from torch import nn

    from nanlint.dynamic.confirm import Options, Runner
    from nanlint.dynamic.target import Target

    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model[1].eval()  # frozen statistics, as when fine-tuning
    runner = Runner(Target(model=model, inputs=torch.randn(3, 4)), Options(device="cpu"))
    runner.forward_backward("eval", runner.inputs)
    assert [m.training for m in runner.model.modules()] == [True, True, False, True]
    assert runner.recorder.events == []


def test_building_a_module_that_takes_no_weak_reference_still_works():
    import torch
    from torch import nn

    from nanlint.dynamic.monitor import building

    class Unhashable(nn.Module):
        __hash__ = None  # type: ignore[assignment]

        def __eq__(self, other):
            return self is other

    with building() as monitor:
        module = Unhashable()
        linear = nn.Linear(2, 2)
    assert module.training
    assert monitor.built_at.get(linear)[1] > 0
    assert torch.isfinite(linear.weight).all()


def test_an_identical_pair_drives_a_cosine_to_one(results):
    code, report, source = results["siamese"]
    assert code == 1, report
    assert report["regimes"] == ["example", "identical-pair"]
    fired = [e for e in report["entries"] if e["status"] in ("confirmed", "unflagged")]
    assert fired and {e["line"] for e in fired} == {_line(source, "return torch.acos(")}, fired
    assert all(e["regimes"] == ["identical-pair"] for e in fired), fired
    code, report, _ = results["siamese_fixed"]
    assert code == 0, report
