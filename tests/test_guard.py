"""nanlint.Guard in a plain training loop: it trips on the first bad step, not
before; the replay places the origin at the planted line; the bundle replays
offline with `nanlint confirm --replay`; GradScaler skips are tolerated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from guard_scripts import EXPECTED, HAZARDS, PLAIN, bundles, marker_line, run, write  # noqa: E402

import nanlint  # noqa: E402


@pytest.fixture(scope="module", params=HAZARDS)
def tripped(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    script = write(tmp, PLAIN, request.param)
    result = run([str(script), "bundles"], tmp)
    return request.param, tmp, script, result


def test_plain_loop_trips_at_the_bad_step_and_names_the_line(tripped):
    hazard, tmp, script, result = tripped
    step, code, kind = EXPECTED[hazard]
    line = marker_line(script.read_text(), hazard)
    assert result.returncode != 0
    assert "finished" not in result.stdout
    assert "GuardError" in result.stderr
    assert f"origin: {script.resolve()}:{line}: {kind}" in result.stderr
    [bundle] = bundles(tmp / "bundles")
    assert bundle.name == f"step{step}"
    report = json.loads((bundle / "report.json").read_text())
    assert report["step"] == step
    origin = report["origin"]
    assert (origin["path"], origin["line"], origin["kind"], origin["code"]) == (str(script.resolve()), line, kind, code)
    assert origin["fix"]
    if hazard == "adam":  # optimizer state, not the model
        assert origin["phase"] == "optimizer" and "eps=1e-08 is 0 in float16" in origin["message"]
    else:
        assert origin["phase"] == "forward"
    assert (bundle / "report.txt").read_text().startswith(f"nanlint guard: step {step}")


def test_bundle_replays_offline(tripped):
    hazard, tmp, script, result = tripped
    [bundle] = bundles(tmp / "bundles")
    written = json.loads((bundle / "report.json").read_text())
    # from another directory, as a colleague would
    other = tmp / "elsewhere"
    other.mkdir(exist_ok=True)
    replay = run(["-m", "nanlint", "confirm", "--replay", str(bundle), "--output-format", "json"], other)
    assert replay.returncode == 1, replay.stderr
    again = json.loads(replay.stdout)
    assert again["origin"] == written["origin"]
    text = run(["-m", "nanlint", "confirm", "--replay", str(bundle)], other)
    assert text.returncode == 1
    assert f"{script.resolve()}:{marker_line(script.read_text(), hazard)}" in text.stdout


@pytest.mark.parametrize("hazard", HAZARDS)
def test_fixed_twins_train_to_the_end(tmp_path, hazard):
    script = write(tmp_path, PLAIN, hazard, fixed=True)
    result = run([str(script), "bundles"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stdout
    assert not (tmp_path / "bundles").exists()


def test_tripped_step_is_not_applied(tmp_path):
    """The weights after the guard trips are the pre-step ones: finite, and
    equal to those before the bad step."""
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = nanlint.Guard(model, optimizer, bundle_dir=str(tmp_path / "b"), echo=False)

    def step(batch):
        optimizer.zero_grad()
        loss = model(batch).sum()
        loss.backward()
        optimizer.step()
        return loss

    guard.step(step, torch.ones(2, 4))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(nanlint.GuardError) as info:
        guard.step(step, torch.tensor([[1.0, float("nan"), 0.0, 0.0]]))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert info.value.report.reason == "the loss is NaN"


def _scaled_run(tmp_path, backoff: float, steps: int = 8):
    """float32 model, GradScaler starting at 2**127: the scaled loss
    overflows until the scale has backed off (for many steps with a backoff near 1)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, backoff_factor=backoff, growth_interval=1000)
    guard = nanlint.Guard(model, optimizer, scaler=scaler, bundle_dir=str(tmp_path / "b"), patience=3, echo=False)

    def step(batch):
        optimizer.zero_grad()
        loss = model(batch).pow(2).sum() + 1.0
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    for i in range(steps):
        guard.step(step, torch.randn(8, 4))
    return guard, model


def test_scaler_overflow_that_recovers_is_normal(tmp_path):
    guard, model = _scaled_run(tmp_path, backoff=2.0 ** -20)
    assert guard.report is None
    assert guard.scaler.get_scale() < 2.0 ** 127  # it did skip
    assert guard.skipped == 0  # the scale came down and steps are applied again
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_scaler_overflow_that_keeps_recurring_trips(tmp_path):
    with pytest.raises(nanlint.GuardError) as info:
        _scaled_run(tmp_path, backoff=0.99)
    report = info.value.report
    assert report.step == 3 and "skipped 3 steps in a row" in report.reason
    assert (tmp_path / "b" / "step3" / "report.json").is_file()


def test_replay_of_a_missing_or_broken_bundle_is_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{not json")
    (broken / "state.pt").write_bytes(b"junk")
    for directory in (tmp_path / "absent", tmp_path, broken):
        result = run(["-m", "nanlint", "confirm", "--replay", str(directory)], tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    both = run(["-m", "nanlint", "confirm", "x.py:make", "--replay", str(broken)], tmp_path)
    neither = run(["-m", "nanlint", "confirm"], tmp_path)
    for result in (both, neither):
        assert result.returncode == 2 and "give either TARGET or --replay DIR" in result.stderr


def test_import_nanlint_does_not_import_torch():
    code = "import sys, nanlint; assert 'torch' not in sys.modules; nanlint.Guard; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_guard_on_an_accelerator(tmp_path, device):
    available = torch.cuda.is_available() if device == "cuda" else (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
    if not available:
        pytest.skip(f"no {device} device")
    model = torch.nn.Linear(4, 1).to(device).half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = nanlint.Guard(model, optimizer, bundle_dir=str(tmp_path / "b"), echo=False)

    def step(batch):
        optimizer.zero_grad()
        loss = torch.exp(model(batch) * 100).sum()
        loss.backward()
        optimizer.step()
        return loss

    with pytest.raises(nanlint.GuardError) as info:
        guard.step(step, torch.full((2, 4), 1.0, device=device, dtype=torch.float16))
    assert info.value.report.origin is not None and info.value.report.origin.op == "exp"
