"""`nanlint confirm` on the models in fixtures/models/ (one per hazard class,
each with a fixed twin), run as users run it (a subprocess), plus the library
entry point `nanlint.watch()`.

Every subprocess imports torch (~2 s), so all the command lines this file needs
are started together on first use and run in parallel; each test then reads
its result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import nanlint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = "fixtures/models"

# model -> (line of the hazard, code, acceptable event kinds)
HAZARDS = {
    "contrastive": (26, "NL001", {"new-nan", "new-inf", "eps-vanishes"}),
    "flow": (27, "NL002", {"new-inf"}),
    "attention": (32, "NL003", {"new-nan"}),
    "train_loop": (40, "NL004", {"grad-nonfinite", "grad-overflow"}),
    "gate": (30, "NL006", {"gate-zero"}),
    "nl101_policy": (28, "NL101", {"new-inf", "new-nan", "grad-nonfinite"}),
    "nl102_click": (36, "NL102", {"new-inf", "new-nan"}),
    "nl103_mil_pooling": (31, "NL103", {"new-nan", "new-inf", "grad-nonfinite"}),
    "nl104_siamese": (24, "NL104", {"grad-nonfinite"}),
    "nl105_angular": (32, "NL105", {"new-nan", "grad-nonfinite"}),
    "nl106_amp_loop": (44, "NL106", {"clip-before-unscale"}),
    "nl107_multilabel": (38, "NL107", {"bce-saturated", "grad-nonfinite"}),
    "nl108_pressure": (28, "NL108", {"new-inf"}),
    "nl109_masked_mean": (32, "NL109", {"grad-nonfinite", "new-nan", "new-inf"}),
    "nl110_pos_embedding": (20, "NL110", {"uninitialized"}),
}
# other findings the same hazard confirms: model -> {(line, code)}
ALSO = {
    "nl103_mil_pooling": {(30, "NL002")},  # the manual softmax's exp is NL002's finding
}
# extra `nanlint confirm` arguments: GradScaler refuses float16 parameters,
# so the AMP loop runs as AMP runs (float32 weights, autocast)
ARGS = {
    "nl106_amp_loop": ["--precision", "autocast"],
}
SCHEMA = {"status", "code", "path", "line", "regime", "regimes", "event", "op", "device", "dtype", "message",
          "float32"}
REPORT = {"device", "dtype", "precision", "regimes", "entries", "notes", "summary"}
STATUSES = ("confirmed", "not_fired", "not_reached", "unflagged", "error")

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _marker_line(path: Path, marker: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        # `# expect: NL003` or, with the confidence it is reported at, `# expect: NL003 (medium)`
        if re.search(re.escape(marker) + r"(\s*\(\w+\))?$", line.rstrip()):
            return number
    raise AssertionError(f"no line ending in `{marker}` in {path}")


def _bad_target(tmp: Path, name: str, body: str) -> str:
    path = tmp / f"{name}.py"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return f"{path}:make"


def _commands(tmp: Path) -> dict:
    cmds = {}
    for model in HAZARDS:
        for variant in (model, f"{model}_fixed"):
            cmds[("json", variant)] = ["confirm", f"{MODELS}/{variant}.py:make", "--device", "cpu",
                                       "--output-format", "json", *ARGS.get(model, [])]
    cmds["text"] = ["confirm", f"{MODELS}/contrastive.py:make", "--device", "cpu"]
    cmds["bf16-flow"] = ["confirm", f"{MODELS}/flow.py:make", "--device", "cpu", "--dtype", "bfloat16",
                         "--output-format", "json"]
    cmds["bf16-contrastive"] = ["confirm", f"{MODELS}/contrastive.py:make", "--device", "cpu",
                                "--dtype", "bfloat16", "--output-format", "json"]
    cmds["autocast-flow"] = ["confirm", f"{MODELS}/flow.py:make", "--device", "cpu", "--precision", "autocast",
                             "--output-format", "json"]
    cmds["err-spec"] = ["confirm", f"{MODELS}/contrastive.py", "--device", "cpu"]
    cmds["err-missing"] = ["confirm", f"{MODELS}/no_such_model.py:make", "--device", "cpu"]
    cmds["err-attr"] = ["confirm", f"{MODELS}/contrastive.py:no_such_factory", "--device", "cpu"]
    cmds["err-raises"] = ["confirm", _bad_target(tmp, "raises", """
        def make():
            raise ValueError("no checkpoint here")
        """), "--device", "cpu"]
    cmds["err-type"] = ["confirm", _bad_target(tmp, "wrong_type", """
        def make():
            return 42
        """), "--device", "cpu"]
    cmds["push"] = ["confirm", _bad_target(tmp, "gap", """
        import torch
        import nanlint


        class Gap(torch.nn.Module):
            def forward(self, x):
                return torch.exp(x[:, 0] - x[:, 1])


        def make():
            return nanlint.Target(model=Gap(), inputs=torch.tensor([[1.0, 2.0]]))
        """), "--device", "cpu", "--output-format", "json"]
    cmds["own-loop"] = ["confirm", _bad_target(tmp, "own_loop", """
        import torch
        import nanlint


        def make():
            torch.manual_seed(0)
            x = torch.randn(64, 16)
            y = 100.0 * x[:, :1] + 50.0
            return nanlint.Target(model=torch.nn.Linear(16, 1), inputs=x,
                                  loss_fn=lambda out, inputs: ((out.float() - y.to(out.device)) ** 2).mean(),
                                  optimizer=lambda params: torch.optim.SGD(params, lr=3.0))
        """), "--device", "cpu", "--output-format", "json"]
    cmds["err-timeout"] = ["confirm", _bad_target(tmp, "hangs", """
        import torch


        class Hangs(torch.nn.Module):
            def forward(self, x):
                while True:
                    try:
                        x = x + 1
                    except Exception:  # the timeout must get through this
                        pass


        def make():
            return Hangs(), torch.ones(2)
        """), "--device", "cpu", "--timeout", "2"]
    cmds["err-oom"] = ["confirm", _bad_target(tmp, "oom", """
        import torch


        class Oom(torch.nn.Module):
            def forward(self, x):
                raise torch.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 20.00 GiB\\nsecond line of the message")


        def make():
            return Oom(), torch.ones(2)
        """), "--device", "cpu"]
    cmds["err-oom-runtime"] = ["confirm", _bad_target(tmp, "oom_runtime", """
        import torch


        class Oom(torch.nn.Module):
            def forward(self, x):
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 MiB")


        def make():
            return Oom(), torch.ones(2)
        """), "--device", "cpu"]
    cmds["err-half-cdist"] = ["confirm", _bad_target(tmp, "half_cdist", """
        import torch


        class Dist(torch.nn.Module):
            def forward(self, x):
                return torch.cdist(x, x)


        def make():
            return Dist(), torch.randn(4, 3)
        """), "--device", "cpu", "--dtype", "float16"]
    cmds["err-half-inv"] = ["confirm", _bad_target(tmp, "half_inv", """
        import torch


        class Inv(torch.nn.Module):
            def forward(self, x):
                return torch.linalg.inv(x)


        def make():
            return Inv(), torch.eye(3) * 2
        """), "--device", "cpu", "--dtype", "float16"]
    cmds["err-multiline"] = ["confirm", _bad_target(tmp, "multiline", """
        def make():
            raise ValueError("first line\\nsecond line")
        """), "--device", "cpu"]
    if not HAS_CUDA:
        cmds["err-cuda"] = ["confirm", f"{MODELS}/contrastive.py:make", "--device", "cuda"]
    for device, present in (("cuda", HAS_CUDA), ("mps", HAS_MPS)):
        if present:
            for model in HAZARDS:
                for variant in (model, f"{model}_fixed"):
                    cmds[(device, variant)] = ["confirm", f"{MODELS}/{variant}.py:make", "--device", device,
                                               "--output-format", "json", *ARGS.get(model, [])]
    return cmds


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """key -> CompletedProcess, all started at once."""
    tmp = tmp_path_factory.mktemp("targets")
    cmds = _commands(tmp)
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the runs share the cores

    def run(args):
        return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=300)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(run, args) for key, args in cmds.items()}
        return {key: f.result() for key, f in futures.items()}


def _report(proc) -> dict:
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == REPORT, report
    return report


def _json(proc) -> list:
    return _report(proc)["entries"]


# -- the hazard models -------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(HAZARDS))
def test_markers_are_where_the_tests_expect(model):
    line, code, _ = HAZARDS[model]
    assert _marker_line(ROOT / MODELS / f"{model}.py", f"# expect: {code}") == line
    for also_line, also_code in ALSO.get(model, ()):
        assert _marker_line(ROOT / MODELS / f"{model}.py", f"# expect: {also_code}") == also_line


@pytest.mark.parametrize("model", sorted(HAZARDS))
def test_hazard_is_confirmed_at_its_line(runs, model):
    line, code, kinds = HAZARDS[model]
    proc = runs[("json", model)]
    assert proc.returncode == 1, proc.stderr
    entries = _json(proc)
    confirmed = [e for e in entries if e["status"] == "confirmed"]
    # a line may hold two findings of one rule (`log(p)` and `log(1 - p)`)
    assert {(e["line"], e["code"]) for e in confirmed} == {(line, code)} | ALSO.get(model, set()), entries
    for entry in confirmed:
        assert entry["path"] == f"{MODELS}/{model}.py"
        if entry["code"] == code:
            assert entry["event"] in kinds, entry
        assert entry["regime"] and entry["op"] and entry["message"]
        assert (entry["device"], entry["dtype"]) == ("cpu", "float16")
    # nothing is blamed on files outside the model (nanlint's own surrogate
    # loss once was, on click's frame), and no other finding is left over
    assert {e["path"] for e in entries} == {f"{MODELS}/{model}.py"}
    assert all(e["status"] in ("confirmed", "unflagged") for e in entries)
    if model != "train_loop":
        # a divergent loop's later inf/NaN in the layers is real and unflagged;
        # elsewhere what the hazard causes downstream is part of it
        assert entries == confirmed


@pytest.mark.parametrize("model", sorted(HAZARDS))
def test_fixed_twin_is_clean(runs, model):
    proc = runs[("json", f"{model}_fixed")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entries = _json(proc)
    assert not [e for e in entries if e["status"] in ("confirmed", "unflagged")]


@pytest.mark.parametrize("model", sorted(HAZARDS))
def test_fixed_twin_is_clean_statically(model):
    _, code, _ = HAZARDS[model]
    proc = subprocess.run([sys.executable, "-m", "nanlint", "check", "--output-format", "json",
                           f"{MODELS}/{model}_fixed.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []


def test_json_schema_is_exactly_the_public_fields(runs):
    for key, proc in runs.items():
        if isinstance(key, tuple) or key.startswith(("bf16", "autocast")):
            report = _report(proc)
            model = key[1].removesuffix("_fixed") if isinstance(key, tuple) else None
            device = key[0] if isinstance(key, tuple) and key[0] != "json" else "cpu"
            autocast = key == "autocast-flow" or "autocast" in ARGS.get(model, [])
            assert (report["device"], report["dtype"], report["precision"]) == (
                device, "bfloat16" if key in ("bf16-flow", "bf16-contrastive") else "float16",
                "autocast" if autocast else "half"), key
            assert report["regimes"] and all(isinstance(r, str) for r in report["regimes"])
            assert all(isinstance(n, str) for n in report["notes"])
            assert report["summary"] == {s: sum(e["status"] == s for e in report["entries"]) for s in STATUSES}
            for entry in report["entries"]:
                assert set(entry) == SCHEMA, key
                assert entry["status"] in ("confirmed", "not_fired", "not_reached", "unflagged", "error")
                assert (entry["code"] is None) == (entry["status"] in ("unflagged", "error"))
                assert isinstance(entry["line"], int)
                # every regime the line fired in, the shown one first among them; none when nothing fired
                fired = entry["status"] in ("confirmed", "unflagged", "error")
                assert bool(entry["regimes"]) == fired, (key, entry)
                assert not fired or entry["regime"] in entry["regimes"], (key, entry)
                assert set(entry["regimes"]) <= set(report["regimes"]) | {"train", "grad-push"}, (key, entry)


def test_text_report(runs):
    proc = runs["text"]
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("nanlint confirm: cpu, float16, pure half (model cast); regimes: example, eval, zeros")
    assert lines[1].startswith("CONFIRMED   fixtures/models/contrastive.py:26: NL001 [tiny-epsilon] new-nan in div "
                               "(regime zeros; also fired in example, eval, near-zero, scaled-x10")
    assert lines[-1] == "1 confirmed, 0 not fired, 0 not reached, 0 unflagged."


def test_bfloat16(runs):
    # exp still overflows bfloat16 (at ~88.7, reached with inputs x100) ...
    entries = _json(runs["bf16-flow"])
    assert [(e["status"], e["line"], e["event"], e["dtype"]) for e in entries] == [
        ("confirmed", 27, "new-inf", "bfloat16")]
    assert entries[0]["regime"] == "scaled-x100"
    # ... but 1e-12 is a normal bfloat16 number: the guard works there
    entries = _json(runs["bf16-contrastive"])
    assert [(e["status"], e["line"], e["code"]) for e in entries] == [("not_fired", 26, "NL001")]
    assert runs["bf16-contrastive"].returncode == 0


def test_autocast_on_cpu_keeps_exp_in_float16(runs):
    proc = runs["autocast-flow"]
    assert proc.returncode == 1, proc.stderr
    entries = _json(proc)
    confirmed = [e for e in entries if e["status"] == "confirmed"]
    assert [(e["line"], e["code"], e["event"], e["op"]) for e in confirmed] == [(27, "NL002", "new-inf", "exp")]


def test_gradient_push_fires_what_no_regime_does(runs):
    # exp(x0 - x1) with x0 < x1: scaling the inputs only makes the argument
    # more negative; signed-gradient steps on the inputs raise it past 11.09
    entries = _json(runs["push"])
    assert [(e["status"], e["line"], e["code"], e["regime"], e["event"]) for e in entries] == [
        ("confirmed", 7, "NL002", "grad-push", "new-inf")]
    assert "gradient-push step" in entries[0]["message"]


def test_nanlints_own_training_loop_names_the_optimizer_factory(runs):
    # with loss_fn + optimizer (no train_step) nanlint runs the steps itself:
    # what they see is reported at the line that gave the optimizer, not at
    # a frame of nanlint's caller. The model is a bare nn.Linear: what its own
    # (torch's) code does is at the line that built it (9): the weight
    # gradients of inputs scaled by 1000 overflow float16, and so does the
    # forward once lr=3.0 has blown the weights up, before the step sees it
    entries = _json(runs["own-loop"])
    assert entries and all(e["status"] == "unflagged" for e in entries)
    assert {(e["path"].rsplit("/", 1)[-1], e["line"], e["regime"]) for e in entries} == {
        ("own_loop.py", 9, "scaled-x1000"), ("own_loop.py", 9, "train"), ("own_loop.py", 11, "train")}
    step = {e["event"] for e in entries if e["line"] == 11}
    assert "grad-nonfinite" in step or "grad-overflow" in step
    assert all(e["float32"] is False for e in entries if e["line"] == 9 and e["regime"] == "scaled-x1000")


# -- errors: exit 2, one line, no traceback -----------------------------------------


@pytest.mark.parametrize("key, fragment", [
    ("err-spec", "target must be FILE.py:FACTORY"),
    ("err-missing", "no such file"),
    ("err-attr", "has no attribute 'no_such_factory'"),
    ("err-raises", "the factory raised ValueError: no checkpoint here"),
    ("err-type", "must return nanlint.Target"),
    ("err-timeout", "did not finish within --timeout 2 s"),
    ("err-oom", "ran out of memory: CUDA out of memory"),
    ("err-oom-runtime", "ran out of memory: CUDA out of memory"),
    ("err-multiline", "the factory raised ValueError: first line"),
    pytest.param("err-cuda", "no CUDA device", marks=pytest.mark.skipif(HAS_CUDA, reason="CUDA is available")),
])
def test_errors_exit_2_with_one_line(runs, key, fragment):
    proc = runs[key]
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("key, op", [("err-half-cdist", "cdist"), ("err-half-inv", "linalg_inv")])
def test_an_op_not_implemented_for_half_is_an_error_entry_in_the_report(runs, key, op):
    # every regime raised and nothing fired: the report shows where, exit 2 (no "all clear")
    proc = runs[key]
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, proc.stdout
    # "not implemented for 'Half'" (cdist), "Low precision dtypes not supported. Got Half" (inv)
    assert f":6: {op} raised " in errors[0] and "Half" in errors[0]
    assert "regimes example, eval, zeros, near-zero, scaled-x10, scaled-x100, scaled-x1000" in errors[0]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the run raised 1 exception") and "Traceback" not in lines[0]


# -- CUDA / MPS: the same confirmation on the device ---------------------------------


@pytest.mark.parametrize("device", [
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")),
    pytest.param("mps", marks=pytest.mark.skipif(not HAS_MPS, reason="no MPS device")),
])
@pytest.mark.parametrize("model", sorted(HAZARDS))
def test_confirmed_on_device(runs, device, model):
    line, code, kinds = HAZARDS[model]
    proc = runs[(device, model)]
    assert proc.returncode == 1, proc.stderr
    confirmed = [e for e in _json(proc) if e["status"] == "confirmed"]
    assert {(e["line"], e["code"], e["device"]) for e in confirmed} == {
        (l, c, device) for l, c in {(line, code)} | ALSO.get(model, set())}
    assert all(e["event"] in kinds for e in confirmed if e["code"] == code)
    fixed = runs[(device, f"{model}_fixed")]
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


# -- nanlint.watch() ------------------------------------------------------------------

THIS = str(Path(__file__).resolve())


def _line(marker: str) -> int:
    return _marker_line(Path(__file__), f"# here: {marker}")


def test_watch_records_origins_with_their_lines():
    x = torch.tensor([0.0, 2.0], dtype=torch.float16)
    with nanlint.watch() as seen:
        y = 1.0 / x  # here: WATCH-INF
        z = y - y  # here: WATCH-NAN
        w = z * 2  # a NaN that only propagates is not an origin
    inf_line, nan_line = _line("WATCH-INF"), _line("WATCH-NAN")
    assert {e.path for e in seen.events} == {THIS}
    # the inf's origin, the NaN's origin (naming the inf's line as its cause),
    # and, on the inf's line, what it went on to cause
    assert [(e.kind, e.line, e.cause) for e in seen.events] == [
        ("new-inf", inf_line, None), ("new-nan", nan_line, (THIS, inf_line)), ("new-nan", inf_line, None)]
    assert seen.reached[(THIS, _line("WATCH-INF"))] == 1
    assert bool(torch.isnan(w).any())


def test_watch_backward_names_the_forward_line():
    x = torch.zeros(3, requires_grad=True)
    with nanlint.watch() as seen:
        y = torch.sqrt(x)  # here: WATCH-SQRT
        y.sum().backward()
    assert [(e.kind, e.line, e.phase) for e in seen.events] == [("grad-nonfinite", _line("WATCH-SQRT"), "backward")]
    assert "SqrtBackward0" in seen.events[0].op


def test_watch_raise_on_event():
    x = torch.zeros(4, dtype=torch.float16)
    with pytest.raises(nanlint.NonFiniteError) as info:
        with nanlint.watch(raise_on_event=True):
            x / x  # here: WATCH-RAISE
    event = info.value.event
    assert (event.kind, event.path, event.line) == ("new-nan", THIS, _line("WATCH-RAISE"))
    assert f"{THIS}:{_line('WATCH-RAISE')}: new-nan" in str(info.value)
    assert isinstance(info.value, FloatingPointError)


def test_watch_raise_on_event_in_backward():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(nanlint.NonFiniteError) as info:
        with nanlint.watch(raise_on_event=True):
            torch.sqrt(x).sum().backward()  # here: WATCH-RAISE-BACKWARD
    assert info.value.event.line == _line("WATCH-RAISE-BACKWARD")


def test_watch_eps_and_gate_events():
    x = torch.zeros(2, 4, dtype=torch.float16)
    b = torch.full((2, 4), -8.0, dtype=torch.float16)
    with nanlint.watch() as seen:
        x / (x.norm(dim=-1, keepdim=True) + 1e-12)  # here: WATCH-EPS
        x * (1 + torch.tanh(b))  # here: WATCH-GATE
    got = {(e.kind, e.line) for e in seen.events}
    assert ("eps-vanishes", _line("WATCH-EPS")) in got
    assert ("new-nan", _line("WATCH-EPS")) in got
    assert ("gate-zero", _line("WATCH-GATE")) in got


def test_watch_builtin_norm_eps_is_applied_in_float32():
    # BERT's LayerNorm(eps=1e-12) in half: the kernel adds eps to a float32
    # variance, so a constant row still normalises to 0, not NaN; batch_norm
    # adds it in half on the CPU and a constant batch does give NaN
    x = torch.full((2, 8), 3.0, dtype=torch.float16)
    with nanlint.watch() as seen:
        y = torch.nn.functional.layer_norm(x, (8,), eps=1e-12)
        torch.nn.functional.group_norm(x.view(2, 8, 1), 2, eps=1e-12)
        torch.nn.functional.rms_norm(torch.zeros_like(x), (8,), eps=1e-12)
        torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-12)  # here: WATCH-BN-EPS
    assert bool((y == 0).all())
    got = {(e.kind, e.op, e.line) for e in seen.events}
    assert got == {("eps-vanishes", "batch_norm", _line("WATCH-BN-EPS")),
                   ("new-nan", "batch_norm", _line("WATCH-BN-EPS"))}


def test_watch_sees_a_running_statistic_overflow_in_place():
    # BatchNorm in half (ResNet after model.half()): a batch whose variance is
    # above 65504 / momentum makes the float16 running_var inf, in a buffer the
    # op updates in place and does not return; eval then normalises with it
    bn = torch.nn.BatchNorm1d(2).half()
    x = torch.tensor([[0.0, 1.0], [3000.0, 2.0]], dtype=torch.float16)
    with nanlint.watch() as seen:
        out = bn(x)  # here: WATCH-BN-RUNNING
    assert bool(torch.isfinite(out).all()) and torch.isinf(bn.running_var).tolist() == [True, False]
    [event] = seen.events
    assert (event.kind, event.op, event.line, event.dtype) == ("new-inf", "batch_norm", _line("WATCH-BN-RUNNING"),
                                                              torch.float16)
    assert event.message.startswith("batch_norm updated its running_var to inf (torch.float16) from finite values")
    # torch.batch_norm takes the statistics after weight and bias
    mean, var = torch.zeros(2, dtype=torch.float16), torch.ones(2, dtype=torch.float16)
    with nanlint.watch() as seen:
        torch.batch_norm(x, None, None, mean, var, True, 0.1, 1e-5, False)  # here: WATCH-BN-TORCH
    assert [(e.kind, e.line) for e in seen.events] == [("new-inf", _line("WATCH-BN-TORCH"))]
    assert "running_var" in seen.events[0].message and torch.isinf(var).tolist() == [True, False]
    # the same batch in float32, in eval mode (no update) or again on the inf buffer: nothing new
    with nanlint.watch() as seen:
        torch.nn.BatchNorm1d(2)(x.float())
        bn(x)
        bn.eval()(x)
    assert seen.events == []


def test_watch_no_false_events_from_masked_backward_internals():
    # the norm's backward computes 0/0 at a zero vector and masks it: the
    # gradient that comes out is finite, so nothing happened
    z = torch.zeros(2, 4, dtype=torch.float16, requires_grad=True)
    with nanlint.watch() as seen:
        (z / z.norm(dim=-1, keepdim=True).clamp_min(1e-4)).sum().backward()
    assert seen.events == []
    assert bool(torch.isfinite(z.grad).all())


def test_watch_sees_tensors_inside_list_arguments():
    # cat/stack take a list: an inf that is already in it is propagated, not new
    a = torch.tensor([1.0], dtype=torch.float16)
    b = torch.tensor([float("inf")], dtype=torch.float16)
    with nanlint.watch() as seen:
        torch.cat([a, b])
        torch.stack((a, b))
    assert seen.events == []


def test_watch_clean_code_has_no_events():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).half()
    x = torch.randn(2, 5, 16, dtype=torch.float16)
    with nanlint.watch() as seen:
        layer(x).float().sum().backward()
    assert seen.events == []
    assert sum(seen.reached.values()) > 0


# -- nanlint.watch(): GradScaler, BCE and uninitialised memory -------------------------


def _amp_setup():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(8, 4)


def test_watch_clip_before_unscale():
    model, opt, x = _amp_setup()
    scaler = torch.amp.GradScaler("cpu")
    assert scaler.is_enabled()
    original = torch.nn.utils.clip_grad_norm_
    with nanlint.watch() as seen:
        for _ in range(2):
            opt.zero_grad()
            scaler.scale(model(x).pow(2).mean()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # here: WATCH-CLIP
            scaler.step(opt)
            scaler.update()
    assert [(e.kind, e.line, e.op) for e in seen.events] == [
        ("clip-before-unscale", _line("WATCH-CLIP"), "clip_grad_norm_")]
    assert "65536" in seen.events[0].message
    # everything wrapped is restored
    assert torch.nn.utils.clip_grad_norm_ is original
    assert torch.amp.GradScaler.scale.__name__ == "scale"


def test_watch_clip_value_before_unscale_across_lines():
    model, opt, x = _amp_setup()
    scaler = torch.amp.GradScaler("cpu")
    with nanlint.watch() as seen:
        loss = model(x).pow(2).mean()
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=0.5)  # here: WATCH-CLIP-VALUE
    assert [(e.kind, e.line) for e in seen.events] == [("clip-before-unscale", _line("WATCH-CLIP-VALUE"))]


def test_watch_clip_imported_by_name_before_watching():
    """`from torch.nn.utils import clip_grad_norm_` at the top of a training
    script binds the function before the monitor starts: it is wrapped there too."""
    from torch.nn.utils import clip_grad_norm_ as imported_clip

    global clip_by_name
    clip_by_name = imported_clip
    model, opt, x = _amp_setup()
    scaler = torch.amp.GradScaler("cpu")
    with nanlint.watch() as seen:
        scaler.scale(model(x).pow(2).mean()).backward()
        clip_by_name(model.parameters(), 1.0)  # here: WATCH-CLIP-BY-NAME
    assert [(e.kind, e.line) for e in seen.events] == [("clip-before-unscale", _line("WATCH-CLIP-BY-NAME"))]
    assert clip_by_name is imported_clip  # restored


def test_watch_no_clip_event_after_unscale_or_without_scaling():
    model, opt, x = _amp_setup()
    scaler = torch.amp.GradScaler("cpu")
    with nanlint.watch() as seen:
        for _ in range(2):
            opt.zero_grad()
            scaler.scale(model(x).pow(2).mean()).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        # a disabled scaler returns the loss unchanged: nothing is scaled
        off = torch.amp.GradScaler("cpu", enabled=False)
        opt.zero_grad()
        off.scale(model(x).pow(2).mean()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        # plain float32 training, no scaler involved
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert seen.events == []


def test_watch_bce_saturated():
    logits = torch.tensor([20.0, -20.0, 0.3, 12.0], dtype=torch.float16, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float16)
    with nanlint.watch() as seen:
        p = torch.sigmoid(logits)  # here: WATCH-SIGMOID
        torch.nn.functional.binary_cross_entropy(p, y)  # here: WATCH-BCE
        torch.nn.BCELoss()(torch.sigmoid(logits.float()), y.float())  # here: WATCH-BCE-MODULE
    got = [(e.kind, e.line, e.op, e.cause[1] if e.cause else None) for e in seen.events]
    assert got == [
        ("bce-saturated", _line("WATCH-BCE"), "binary_cross_entropy", _line("WATCH-SIGMOID")),
        ("bce-saturated", _line("WATCH-SIGMOID"), "sigmoid", _line("WATCH-BCE")),
        ("bce-saturated", _line("WATCH-BCE-MODULE"), "binary_cross_entropy", None),
    ]
    assert "2 probabilities" in seen.events[0].message


def test_watch_no_bce_event_with_logits_or_agreeing_targets():
    logits = torch.tensor([20.0, -20.0, 0.3], dtype=torch.float16, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float16)
    with nanlint.watch() as seen:
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
        # saturated, but the target agrees: the loss is 0 and nothing is clamped
        torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits.detach().float()), torch.tensor([1.0, 0.0, 1.0]))
    assert seen.events == []


class _Uninitialised(torch.nn.Module):
    def __init__(self, initialise: bool) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(4, 3))  # here: WATCH-EMPTY
        self.legacy = torch.nn.Parameter(torch.Tensor(4, 3))  # here: WATCH-TENSOR-NEW
        self.linear = torch.nn.Linear(3, 3)  # empty inside, then reset_parameters(): initialised
        if initialise:
            torch.nn.init.xavier_uniform_(self.weight)
            torch.nn.init.zeros_(self.legacy)

    def forward(self, x):
        return self.linear(x @ self.weight + x @ self.legacy)


def test_watch_uninitialized_parameter_names_its_creation_line():
    before = (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
    with nanlint.watch(fill_uninitialized=True) as seen:
        model = _Uninitialised(initialise=False)
        model(torch.randn(2, 4)).sum().backward()
    got = {(e.kind, e.line, e.op) for e in seen.events}
    assert got == {("uninitialized", _line("WATCH-EMPTY"), "empty"),
                   ("uninitialized", _line("WATCH-TENSOR-NEW"), "torch.Tensor")}
    assert all("never initialised" in e.message for e in seen.events)
    # the deterministic settings and Tensor.__new__ are as they were
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == before
    assert "__new__" not in vars(torch.Tensor)


def test_watch_initialised_empty_parameter_has_no_event():
    nan = torch.full((4, 3), float("nan"))
    with nanlint.watch(fill_uninitialized=True) as seen:
        model = _Uninitialised(initialise=True)
        # memory the code allocates and fills itself is fine too
        buf = torch.empty(2, 3)
        buf.copy_(model(torch.randn(2, 4)))
        buf.sum().backward()
        # initialised, and NaN later (a diverged step): not uninitialised memory
        with torch.no_grad():
            model.weight.copy_(nan)
        model(torch.randn(2, 4)).sum().backward()
    assert seen.events == []


def test_watch_uninitialized_skip_init_and_to_empty():
    x = torch.randn(2, 3)
    with nanlint.watch(fill_uninitialized=True) as seen:
        skipped = torch.nn.utils.skip_init(torch.nn.Linear, 3, 4)  # here: WATCH-SKIP-INIT
        emptied = torch.nn.Linear(3, 4, device="meta").to_empty(device="cpu")  # here: WATCH-TO-EMPTY
        skipped(x)
        emptied(x)
    assert {(e.kind, e.line) for e in seen.events} == {
        ("uninitialized", _line("WATCH-SKIP-INIT")), ("uninitialized", _line("WATCH-TO-EMPTY"))}
