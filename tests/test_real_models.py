"""`nanlint confirm` on real models: GPT-2, BERT, CLIP, ViT and ResNet from
`transformers`, built from tiny configs (fixtures/models/real_models.py, nothing downloaded),
each in pure float16 and under CPU autocast, run as users run it (a subprocess).

What each run reports was read and judged; these tests pin that verdict:

- every run ends without an internal error (exit 0 or 1, no traceback) and
  every regime that applies runs to its end (no regime skipped or stopped);
- the two events are real, both in pure half only (under autocast weights
  and buffers stay float32 and nothing fires):
  GPT-2 trained with AdamW (eps left at its default 1e-8) turns its weights
  non-finite in the first step, because 1e-8 is 0 in float16 and exp_avg_sq
  underflows to 0 (0/0). It is reported as an unflagged `optimizer-state`
  event at the line that makes the optimizer (no rule can flag an eps nobody
  wrote).
  ResNet's BatchNorm2d keeps its running_var in float16: the scaled-x1000
  images give its stem conv outputs of variance up to 8.5e5, whose tenth
  (momentum 0.1) overflows the buffer to inf, in place, at the line that
  calls the norm (an unflagged `new-inf` in batch_norm); eval mode would then
  normalise every batch with inf;
- BERT's and ViT's LayerNorm(eps=1e-12) is not an event (its kernel adds eps
  to a float32 variance), nor is anything else in the libraries' code: the
  static findings joined from it are only NOT FIRED (CLIP's vector norm,
  reached but never zero) or NOT REACHED (an activation none of these models
  uses); ResNet's files have none.

Library line numbers move between `transformers` releases, so entries in its
files are checked by what the line holds, not by its number. The libraries are
the `models` test extra (pip install -e '.[models]'); without them this file
is skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
TARGETS = "fixtures/models/real_models.py"
MODELS = ("gpt2", "bert", "clip", "vit", "resnet")
PRECISIONS = ("half", "autocast")
SCHEMA = {"status", "code", "path", "line", "regime", "regimes", "event", "op", "device", "dtype", "message",
          "float32"}
# token ids and masks are not floating: the value regimes (zeros, scaled-x10,
# ...) and the gradient push need a floating input, which CLIP, ViT and ResNet
# have; on token ids the scaled regimes scale the embeddings' outputs instead.
# The masked-row regimes need a mask, which the image classifiers lack. The
# models are built in training mode, so the eval regime runs too
SCALED = ["scaled-x10", "scaled-x100", "scaled-x1000"]
TOKEN_REGIMES = ["example", "eval", *SCALED, "masked-row", "masked-row-inverse", "train"]
VALUE_REGIMES = ["zeros", "near-zero", *SCALED]
ALL_REGIMES = ["example", "eval", *VALUE_REGIMES, "masked-row", "masked-row-inverse", "train"]
IMAGE_REGIMES = ["example", "eval", *VALUE_REGIMES, "train"]
TOKEN_MODELS = {"gpt2": 2, "bert": 3}  # -> their embedding layers (tokens, positions, BERT's token types)
REGIMES = {"gpt2": TOKEN_REGIMES, "bert": TOKEN_REGIMES, "clip": ALL_REGIMES, "vit": IMAGE_REGIMES,
           "resnet": IMAGE_REGIMES}
# the runs with an event (exit 1)
EVENTS = {("gpt2", "half"), ("resnet", "half")}
AUTOCAST_NOTE = ("CPU autocast keeps exp, log, softmax, layer_norm and sums in the low precision dtype; "
                 "CUDA autocast runs them in float32, so CUDA may not fire what CPU does.")
# every run is read from its JSON, which carries the regimes and notes the text
# prints; these runs are made in text too, to see the text say the same (each
# run is a process that imports torch and transformers: ~4 s of CPU)
TEXT = (("gpt2", "half"), ("clip", "autocast"), ("resnet", "half"))


@pytest.fixture(scope="module")
def runs():
    """(model, precision, format) -> CompletedProcess, all started at once."""
    # nothing here may reach a model hub: the models are built from configs
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    keys = [(model, precision, "json") for model in MODELS for precision in PRECISIONS]
    keys += [(model, precision, "text") for model, precision in TEXT]
    cmds = {(model, precision, fmt): ["confirm", f"{TARGETS}:{model}", "--device", "cpu", "--dtype", "float16",
                                      "--precision", precision, "--output-format", fmt]
            for model, precision, fmt in keys}

    def run(args):
        return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=ROOT, capture_output=True, text=True,
                              env=env, timeout=300)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(run, args) for key, args in cmds.items()}
        return {key: f.result() for key, f in futures.items()}


def _source_line(path: str, line: int) -> str:
    return Path(path).read_text(encoding="utf-8").splitlines()[line - 1]


def _target_line(fragment: str) -> int:
    text = (ROOT / TARGETS).read_text(encoding="utf-8").splitlines()
    [number] = [n for n, line in enumerate(text, 1) if fragment in line]
    return number


def _is_library(path: str) -> bool:
    return "transformers" in Path(path).parts


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", MODELS)
def test_runs_without_internal_error(runs, model, precision):
    for fmt in ["json"] + ["text"] * ((model, precision) in TEXT):
        proc = runs[(model, precision, fmt)]
        expected = 1 if (model, precision) in EVENTS else 0
        assert proc.returncode == expected, (proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert not re.search(r"^error:", proc.stderr, re.M), proc.stderr


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", MODELS)
def test_every_regime_runs_to_its_end(runs, model, precision):
    report = json.loads(runs[(model, precision, "json")].stdout)
    # the gradient push runs (and is listed) when static findings were joined
    # and there is a floating input to push
    static = any(e["code"] for e in report["entries"])
    regimes = REGIMES[model] + ["grad-push"] * (static and model not in TOKEN_MODELS)
    assert (report["device"], report["dtype"], report["precision"], report["regimes"]) == (
        "cpu", "float16", precision, regimes)
    # no regime was skipped, stopped at a line or raised outside the model
    embeddings = TOKEN_MODELS.get(model)
    expected = [f"the inputs are token ids: {', '.join(SCALED)} applied to the outputs of the model's "
                f"{embeddings} embedding layers"] if embeddings else []
    assert report["notes"] == expected + ([AUTOCAST_NOTE] if precision == "autocast" else []), report["notes"]
    assert report["summary"]["error"] == 0
    if (model, precision) in TEXT:
        lines = runs[(model, precision, "text")].stdout.splitlines()
        mode = "pure half (model cast)" if precision == "half" else "autocast on cpu"
        assert lines[0] == f"nanlint confirm: cpu, float16, {mode}; regimes: {', '.join(regimes)}"
        assert [line for line in lines if line.startswith("note: ")] == ["note: " + n for n in report["notes"]]
        assert not any(line.startswith("ERROR") for line in lines), lines
        # a line per entry, then the counts
        assert len([line for line in lines if not line.startswith(("nanlint confirm: ", "note: "))]) == (
            len(report["entries"]) + 1)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", MODELS)
def test_entries_are_the_judged_ones(runs, model, precision):
    report = json.loads(runs[(model, precision, "json")].stdout)
    assert (report["device"], report["dtype"]) == ("cpu", "float16")
    entries = report["entries"]
    for entry in entries:
        assert set(entry) == SCHEMA
        assert (entry["device"], entry["dtype"]) == ("cpu", "float16")
    events = [e for e in entries if e["status"] in ("confirmed", "unflagged", "error")]
    if (model, precision) == ("gpt2", "half"):
        [event] = events
        assert (event["status"], event["path"], event["line"], event["op"], event["regime"], event["event"]) == (
            "unflagged", TARGETS, _target_line("torch.optim.AdamW("), "step", "train", "optimizer-state")
        assert event["message"].startswith("AdamW's eps 1e-08 is 0 in float16"), event
        assert "from finite gradients" in event["message"]
        assert event["float32"] is None  # training is not repeated in float32
    elif (model, precision) == ("resnet", "half"):
        [event] = events
        assert (event["status"], event["op"], event["regime"], event["event"]) == (
            "unflagged", "batch_norm", "scaled-x1000", "new-inf")
        assert Path(event["path"]).name == "modeling_resnet.py", event
        assert "self.normalization(" in _source_line(event["path"], event["line"]), event  # its BatchNorm2d
        assert event["message"].startswith("batch_norm updated its running_var to inf (torch.float16)"), event
        assert event["float32"] is False  # the float32 reference's buffers hold the same batch
    else:
        assert events == []
    # the rest are static findings in the library's code, judged by what their line holds;
    # ResNet's files have none (its ReLU is torch's, so activations.py is not joined)
    rest = [e for e in entries if e not in events]
    assert bool(rest) == (model != "resnet") and all(_is_library(e["path"]) for e in rest), rest
    for entry in rest:
        text = _source_line(entry["path"], entry["line"])
        if entry["code"] == "NL002":  # an exp of an activation none of these models uses
            assert entry["status"] == "not_reached" and "exp" in text, entry
        elif entry["code"] == "NL104":  # CLIP's vector norm: reached, never of a zero vector
            assert model == "clip" and entry["status"] == "not_fired", entry
            assert Path(entry["path"]).name == "modeling_clip.py" and ("pow(" in text or "sqrt" in text), entry
        else:
            raise AssertionError(f"an entry nobody judged: {entry}")
    if model == "clip":
        assert any(e["code"] == "NL104" for e in rest), rest
