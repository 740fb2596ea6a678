"""The guard's Lightning and Hugging Face Trainer callbacks, against the real
libraries (the `integrations` extra): each planted hazard is pinpointed at
its line, the bundle replays offline, and the fixed twins train to the end."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from guard_scripts import HAZARDS, HF, LIGHTNING, bundles, check_origin, run, write  # noqa: E402

FRAMEWORKS = {"lightning": ("lightning", LIGHTNING), "transformers": ("accelerate", HF)}


def _needs(framework: str) -> str:
    pytest.importorskip(framework)
    pytest.importorskip(FRAMEWORKS[framework][0])
    return FRAMEWORKS[framework][1]


@pytest.mark.parametrize("hazard", HAZARDS)
@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_callback_pinpoints_the_planted_hazard(tmp_path, framework, hazard):
    template = _needs(framework)
    script = write(tmp_path, template, hazard)
    result = run([str(script), str(tmp_path / "bundles")], tmp_path)
    assert result.returncode != 0 and "finished" not in result.stdout
    assert "GuardError" in result.stderr, result.stderr[-3000:]
    [bundle] = bundles(tmp_path / "bundles")
    check_origin(bundle, script, hazard)


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_callback_stays_quiet_on_the_fixed_twin(tmp_path, framework):
    template = _needs(framework)
    for hazard in HAZARDS:
        script = write(tmp_path, template, hazard, fixed=True, name=f"train_{hazard}.py")
        result = run([str(script), str(tmp_path / hazard)], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "finished" in result.stdout
        assert not (tmp_path / hazard).exists()
