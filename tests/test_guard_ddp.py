"""The guard under DistributedDataParallel: two gloo processes on CPU, only
rank 1 fed the poisoned batch. Every rank stops in the same step (the
gradients are all-reduced); the rank that saw the NaN replays and reports."""

from __future__ import annotations

import json
import socket

import pytest

torch = pytest.importorskip("torch")

from guard_scripts import DDP, EXPECTED, HAZARDS, bundles, check_origin, marker_line, run, write  # noqa: E402

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize("hazard", HAZARDS)
def test_ddp_rank_that_sees_the_nan_replays(tmp_path, hazard):
    script = write(tmp_path, DDP, hazard)
    result = run([str(script), str(tmp_path / "bundles"), _free_port()], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "bundles-results" / f"rank{r}.json").read_text()) for r in (0, 1)]
    step = EXPECTED[hazard][0]
    assert not any(r["finished"] for r in ranks)  # both stopped: neither hangs in a collective
    line = marker_line(script.read_text(), hazard)
    if hazard == "adam":
        # the same all-reduced update broke the weights of both ranks: both saw a NaN loss
        assert [r["origin"]["line"] for r in ranks] == [line, line]
        assert [b.name for b in bundles(tmp_path / "bundles")] == [f"step{step}", f"step{step}-rank1"]
    else:
        assert ranks[0]["origin"] is None and "rank 1 saw it" in ranks[0]["reason"]
        assert ranks[1]["origin"]["line"] == line and ranks[1]["reason"] == "the loss is NaN"
        assert [b.name for b in bundles(tmp_path / "bundles")] == [f"step{step}-rank1"]
    check_origin(bundles(tmp_path / "bundles")[-1], script, hazard)
    # no rank stops before every replay is written: under torchrun the first
    # rank to exit would take the replaying one down with it
    written = len(bundles(tmp_path / "bundles"))
    assert [r["reports_done"] for r in ranks] == [written, written], ranks
