"""`nanlint confirm` on realistic models whose runs raise: each regime is
isolated, an exception is an `error` entry naming the op, the user's line and
the regimes, a regime that makes a loss target invalid is skipped with a note,
and an exception the dtype causes at a flagged line confirms that finding.

Models: fixtures/models/gpt_padding.py (masked_fill(-1e9) in half raises),
vae_bce.py (the input is the BCE target), adam_half.py (Adam's eps in half).
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
MODELS = "fixtures/models"

PARTLY_RAISES = """
    import torch


    class Flow(torch.nn.Module):
        def forward(self, x):
            y = torch.exp(x)
            if x.abs().max() > 500:
                raise ValueError("input out of range\\nsecond line")
            return y


    def make():
        return Flow(), torch.ones(2)
    """


# a loss written as a plain function in another file of the project
PROJECT = {
    "losses.py": """
        import torch


        def nll(p):
            return -torch.log(p + 1e-12).mean()
        """,
    "train.py": """
        import torch
        import nanlint

        import losses


        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 2)

            def forward(self, x):
                return torch.sigmoid(self.lin(x))


        def make():
            torch.manual_seed(0)
            return nanlint.Target(model=Net(), inputs=torch.randn(3, 4), loss_fn=lambda out, x: losses.nll(out))
        """,
    "stat32.py": """
        import torch
        import nanlint


        def loss_fn(out, x):
            peak = out.detach().float().pow(30).amax()  # a float32 statistic, logged
            return out.float().pow(2).mean() + 0 * peak.clamp(max=1.0)


        def make():
            torch.manual_seed(0)
            return nanlint.Target(model=torch.nn.Linear(4, 2), inputs=torch.randn(8, 4), loss_fn=loss_fn)
        """,
    "epsdef.py": """
        import torch


        class Norm(torch.nn.Module):
            def forward(self, x, eps=1e-12):
                return x / (x.norm(dim=-1, keepdim=True) + eps)


        def make():
            return Norm(), torch.randn(4, 8)
        """,
    # the optimizer made in a def: the eps NL001 flags is on the line that makes it, not the def line
    "adamdef.py": """
        import torch
        import torch.nn.functional as F
        import nanlint


        def make_optimizer(params):
            return torch.optim.Adam(params, lr=1e-3, eps=1e-8)


        def make():
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).half()
            x = torch.randn(32, 16)
            y = torch.randint(0, 4, (32,))
            return nanlint.Target(model=model, inputs=x, optimizer=make_optimizer,
                                  loss_fn=lambda out, inputs: F.cross_entropy(out.float(), y.to(out.device)))
        """,
    "steps.py": """
        import torch
        import nanlint


        def make():
            torch.manual_seed(0)
            x = torch.randn(8, 4)

            def train_step(model, inputs, optimizer):
                optimizer.zero_grad()
                loss = model(inputs).float().pow(2).mean()
                loss.backward()
                optimizer.step()
                return loss.detach()

            return nanlint.Target(model=torch.nn.Linear(4, 2), inputs=x, train_step=train_step,
                                  optimizer=lambda params: torch.optim.SGD(params, lr=1e-3))
        """,
}


def _commands(tmp: Path) -> dict:
    partly = tmp / "partly.py"
    partly.write_text(textwrap.dedent(PARTLY_RAISES).lstrip("\n"))
    for name, body in PROJECT.items():
        (tmp / name).write_text(textwrap.dedent(body).lstrip("\n"))
    cpu = ["--device", "cpu"]
    return {
        "other-file": ["confirm", f"{tmp / 'train.py'}:make", *cpu, "--output-format", "json"],
        # without scaled-x1000, whose inputs also overflow the float16 Linear's
        # weight gradients (a real event, at the line that builds the Linear)
        "stat32": ["confirm", f"{tmp / 'stat32.py'}:make", *cpu, "--regimes", "-scaled-x1000"],
        "epsdef": ["confirm", f"{tmp / 'epsdef.py'}:make", *cpu, "--output-format", "json"],
        "steps": ["confirm", f"{tmp / 'steps.py'}:make", *cpu, "--output-format", "json"],
        "adam-def": ["confirm", f"{tmp / 'adamdef.py'}:make", *cpu, "--regimes", "example,train",
                     "--output-format", "json"],
        "gpt": ["confirm", f"{MODELS}/gpt_padding.py:make", *cpu],
        "gpt-json": ["confirm", f"{MODELS}/gpt_padding.py:make", *cpu, "--output-format", "json"],
        "vae": ["confirm", f"{MODELS}/vae_bce.py:make", *cpu],
        "vae-json": ["confirm", f"{MODELS}/vae_bce.py:make", *cpu, "--output-format", "json"],
        "stat32-json": ["confirm", f"{tmp / 'stat32.py'}:make", *cpu, "--regimes", "-scaled-x1000",
                        "--output-format", "json"],
        "adam": ["confirm", f"{MODELS}/adam_half.py:make", *cpu, "--output-format", "json"],
        "adam-no-train": ["confirm", f"{MODELS}/adam_half.py:make", *cpu, "--regimes", "-train,-grad-push"],
        "adam-only": ["confirm", f"{MODELS}/adam_half.py:make", *cpu, "--regimes", "example,train"],
        "partly": ["confirm", f"{partly}:make", *cpu, "--push-steps", "0"],
        "bad-regime": ["confirm", f"{MODELS}/adam_half.py:make", *cpu, "--regimes", "example,bogus"],
        "mixed-regime": ["confirm", f"{MODELS}/adam_half.py:make", *cpu, "--regimes", "example,-train"],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cmds = _commands(tmp_path_factory.mktemp("regimes"))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(args):
        return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=ROOT, capture_output=True, text=True,
                              env=env, timeout=300)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(run, args) for key, args in cmds.items()}
        return {key: f.result() for key, f in futures.items()}


def _line(model: str, marker: str) -> int:
    text = (ROOT / MODELS / f"{model}.py").read_text().splitlines()
    return next(n for n, line in enumerate(text, 1) if line.rstrip().endswith(marker))


def test_a_fill_that_raises_in_half_confirms_its_finding_and_every_regime_runs(runs):
    line = _line("gpt_padding", "# expect: NL003")
    entries = json.loads(runs["gpt-json"].stdout)["entries"]
    assert [(e["status"], e["code"], e["line"], e["event"]) for e in entries] == [
        ("confirmed", "NL003", line, "fill-overflow")]
    proc = runs["gpt"]
    assert proc.returncode == 1, proc.stderr
    # token ids: the scaled regimes scale the embedding's output; no gradient push
    assert proc.stdout.splitlines()[0].endswith(
        "regimes: example, eval, scaled-x10, scaled-x100, scaled-x1000, masked-row, masked-row-inverse")
    # the crash is said, with the regimes it stopped
    assert (f"note: regimes example, eval, scaled-x10, scaled-x100, scaled-x1000, masked-row, masked-row-inverse "
            f"stopped at {MODELS}/gpt_padding.py:{line} (RuntimeError: value cannot be converted") in proc.stdout


def test_a_regime_that_makes_the_bce_target_invalid_is_skipped_with_a_note(runs):
    proc = runs["vae"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == "0 confirmed, 0 not fired, 0 not reached, 0 unflagged."
    for factor in (10, 100, 1000):
        assert (f"note: regime scaled-x{factor} skipped: it makes the inputs invalid as the target of "
                f"binary_cross_entropy (RuntimeError: all elements of target should be between 0 and 1)") in lines
    assert proc.stderr == ""


def test_adams_eps_in_half_is_optimizer_state_not_gradient_size(runs):
    proc = runs["adam"]
    assert proc.returncode == 1, proc.stderr
    entries = json.loads(proc.stdout)["entries"]
    line = _line("adam_half", "# expect: NL001")
    assert [(e["status"], e["code"], e["line"], e["event"], e["regime"]) for e in entries] == [
        ("confirmed", "NL001", line, "optimizer-state", "train")]
    assert "Adam's eps 1e-08 is 0 in float16" in entries[0]["message"]


def test_optimizer_state_is_at_the_line_that_makes_the_optimizer(runs):
    # a factory written as a def: the event is at its `torch.optim.Adam(...)`
    # line, where NL001 flags the eps, not at the `def` line
    proc = runs["adam-def"]
    assert proc.returncode == 1, proc.stderr
    entries = json.loads(proc.stdout)["entries"]
    assert [(e["status"], e["code"], e["line"], e["event"], e["regime"]) for e in entries] == [
        ("confirmed", "NL001", 7, "optimizer-state", "train")]


def test_regimes_select_and_skip(runs):
    proc = runs["adam-no-train"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].endswith(
        "regimes: example, eval, zeros, near-zero, scaled-x10, scaled-x100, scaled-x1000")
    proc = runs["adam-only"]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].endswith("regimes: example, train")
    for key, fragment in (("bad-regime", "unknown regime 'bogus'"), ("mixed-regime", "either name the regimes")):
        proc = runs[key]
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and fragment in proc.stderr


def test_an_exception_in_some_regimes_is_an_error_entry_and_the_rest_is_kept(runs):
    proc = runs["partly"]
    # the exp overflow (x100) is confirmed although x1000 raised afterwards
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("CONFIRMED   ") and ":6: NL002 [unclamped-exp] new-inf in exp" in lines[1]
    assert lines[2].startswith("ERROR       ") and lines[2].endswith(
        ":8: raised ValueError: input out of range (regime scaled-x1000)")
    assert lines[3] == "1 confirmed, 0 not fired, 0 not reached, 0 unflagged, 1 error."


def test_findings_are_joined_in_every_project_file_an_event_lands_in(runs):
    # losses.py is neither the factory's file nor a model class's: its NL001
    # finding is joined, not reported as two unflagged events
    proc = runs["other-file"]
    assert proc.returncode == 1, proc.stderr
    entries = json.loads(proc.stdout)["entries"]
    assert [(e["status"], e["code"], e["path"].rsplit("/", 1)[-1], e["line"]) for e in entries] == [
        ("confirmed", "NL001", "losses.py", 5)]


def test_an_optimizer_step_that_ran_is_reached(runs):
    proc = runs["steps"]
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)["entries"]
    assert [(e["status"], e["code"], e["line"], e["message"]) for e in entries] == [
        ("not_fired", "NL004", 13, "reached 5 times, never fired")]


def test_float32_code_that_only_a_regime_overflows_is_a_note_not_a_hazard(runs):
    proc = runs["stat32"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == "0 confirmed, 0 not fired, 0 not reached, 0 unflagged."
    assert lines[2].startswith("note: ") and lines[2].endswith(
        "stat32.py:6: new-inf in pow in float32 only under regime scaled-x100: the regime's inputs "
        "overflow that dtype too, not a low-precision hazard")


def test_an_eps_is_one_entry_at_its_binding_and_its_uses(runs):
    # NL001 flags the default argument (line 5); it vanishes, and divides 0/0, at its use (line 6)
    proc = runs["epsdef"]
    assert proc.returncode == 1, proc.stderr
    entries = json.loads(proc.stdout)["entries"]
    assert [(e["status"], e["code"], e["line"], e["event"]) for e in entries] == [
        ("confirmed", "NL001", 5, "new-nan")]


@pytest.mark.parametrize("key", ["gpt", "vae", "stat32"])
def test_json_is_one_object_with_what_the_text_report_says(runs, key):
    # the same run in both formats: a regime stopped at a line (gpt), regimes
    # skipped for an invalid loss target (vae), a float32 regime artefact
    # (stat32): the notes, the regimes that ran and the counts are in the JSON too
    text, report = runs[key], json.loads(runs[f"{key}-json"].stdout)
    assert runs[f"{key}-json"].returncode == text.returncode, runs[f"{key}-json"].stderr
    lines = text.stdout.splitlines()
    assert list(report) == ["device", "dtype", "precision", "regimes", "entries", "notes", "summary"]
    assert (report["device"], report["dtype"], report["precision"]) == ("cpu", "float16", "half")
    assert lines[0] == f"nanlint confirm: cpu, float16, pure half (model cast); regimes: {', '.join(report['regimes'])}"
    notes = [line[len("note: "):] for line in lines if line.startswith("note: ")]
    assert notes and report["notes"] == notes
    counts = report["summary"]
    assert list(counts) == ["confirmed", "not_fired", "not_reached", "unflagged", "error"]
    assert counts == {s: sum(e["status"] == s for e in report["entries"]) for s in counts}
    assert (f"{counts['confirmed']} confirmed, {counts['not_fired']} not fired, {counts['not_reached']} not reached, "
            f"{counts['unflagged']} unflagged.") in lines
