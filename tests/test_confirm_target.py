"""`nanlint confirm` against targets that misbehave: they exit, print, hang,
leave threads, raise odd exceptions, or live in packages. Whatever a target
does, confirm either reports the run or exits 2 with one `error:` line (130
when the user interrupts), and its stdout carries only the report.

Each subprocess imports torch (~2 s): the command lines are started together
on first use and each test reads its result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import nanlint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NANLINT = [sys.executable, "-m", "nanlint"]
# the console script: unlike `python -m`, it does not put the current directory on sys.path
SCRIPT = str(Path(sys.executable).with_name("nanlint"))

# how a target can end the process, at each place its code runs
ENDINGS = {
    "sys-exit-0": "sys.exit(0)",
    "sys-exit-3": "sys.exit(3)",
    "os-exit-0": "os._exit(0)",
    "os-exit-7": "os._exit(7)",
    "keyboard-interrupt": "raise KeyboardInterrupt",
}
PLACES = ("import", "factory", "forward")


def _ending_target(ending: str, place: str) -> str:
    statement = ENDINGS[ending]
    return textwrap.dedent(f"""
        import os
        import sys
        import torch

        if {place == "import"}:
            {statement}


        class M(torch.nn.Module):
            def forward(self, x):
                if {place == "forward"}:
                    {statement}
                return x * 2


        def make():
            if {place == "factory"}:
                {statement}
            return M(), torch.ones(2)
        """)


TARGETS = {
    "prints": """
        import os
        import sys
        import torch

        print("printed at import")


        class M(torch.nn.Module):
            def forward(self, x):
                print("printed in forward")
                os.write(1, b"written to fd 1\\n")
                sys.stdout.write("[not json\\n")
                return torch.exp(x)


        def make():
            print("printed in the factory")
            return M(), torch.ones(2)
        """,
    "catches-base-exception": """
        import torch


        class M(torch.nn.Module):
            def forward(self, x):
                while True:
                    try:
                        x = x + 1
                    except BaseException:  # swallows a timeout raised in this process
                        pass


        def make():
            return M(), torch.ones(2)
        """,
    "ignores-sigalrm": """
        import signal
        import time
        import torch

        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, signal.SIG_IGN)


        def make():
            while True:
                time.sleep(0.05)
        """,
    "disarms-timer": """
        import signal
        import time
        import torch


        def make():
            if hasattr(signal, "setitimer"):
                signal.setitimer(signal.ITIMER_REAL, 0)
            while True:
                time.sleep(0.05)
        """,
    "thread": """
        import threading
        import time
        import torch


        def make():
            threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon
            return torch.nn.Identity(), torch.ones(2)
        """,
    "empty-batch": """
        import torch


        class M(torch.nn.Module):
            def forward(self, x):
                return torch.exp(x).sum(dim=-1)


        def make():
            return M(), torch.ones(0, 3)
        """,
    "bad-str-factory": """
        class Unprintable(Exception):
            def __str__(self):
                raise RuntimeError("__str__ failed")


        def make():
            raise Unprintable()
        """,
    "bad-str-forward": """
        import torch


        class Unprintable(Exception):
            def __str__(self):
                raise RuntimeError("__str__ failed")


        class M(torch.nn.Module):
            def forward(self, x):
                raise Unprintable()


        def make():
            return M(), torch.ones(2)
        """,
    "embedding": """
        import torch


        class Tagger(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Embedding(10, 4, padding_idx=0)
                self.out = torch.nn.Linear(4, 3)

            def forward(self, tokens):
                return self.out(self.embed(tokens))


        def make():
            return Tagger(), torch.tensor([[0, 3, 5, 0]])
        """,
    "warns": """
        import warnings
        import torch

        warnings.warn("a warning from the target's import", UserWarning)


        def make():
            return torch.nn.Identity(), torch.ones(2)
        """,
    "clean": """
        import torch


        def make():
            return torch.nn.Linear(2, 2), torch.ones(1, 2)
        """,
}

PACKAGE = {
    "mypkg/__init__.py": "",
    "mypkg/layers.py": """
        import torch


        class Flow(torch.nn.Module):
            def forward(self, x):
                return torch.exp(x)  # expect: NL002
        """,
    "mypkg/model.py": """
        import torch

        from .layers import Flow


        def make():
            return Flow(), torch.ones(2)
        """,
    "targets.py": """
        import torch


        class Flow(torch.nn.Module):
            def forward(self, x):
                return torch.exp(x)


        def gpt():
            return Flow(), torch.ones(2)
        """,
}


def _write(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def _commands(tmp: Path) -> dict:
    """key -> (argv, cwd, extra environment)"""
    cmds = {}
    for ending in ENDINGS:
        for place in PLACES:
            path = _write(tmp, f"end_{ending.replace('-', '_')}_{place}.py", _ending_target(ending, place))
            cmds[("ending", ending, place)] = ([*NANLINT, "confirm", f"{path}:make", "--device", "cpu"], ROOT, {})
    paths = {name: _write(tmp, f"{name.replace('-', '_')}.py", body) for name, body in TARGETS.items()}
    for name in ("prints", "empty-batch", "bad-str-factory", "bad-str-forward", "embedding", "warns", "clean"):
        cmds[name] = ([*NANLINT, "confirm", f"{paths[name]}:make", "--device", "cpu", "--output-format", "json"],
                      ROOT, {})
    for name in ("catches-base-exception", "ignores-sigalrm", "disarms-timer"):
        cmds[name] = ([*NANLINT, "confirm", f"{paths[name]}:make", "--device", "cpu", "--timeout", "30"], ROOT, {})
    cmds["thread"] = ([*NANLINT, "confirm", f"{paths['thread']}:make", "--device", "cpu"], ROOT, {})
    cmds["warns-verbose"] = ([*NANLINT, "confirm", f"{paths['warns']}:make", "--device", "cpu", "--verbose"],
                             ROOT, {})
    for value in ("inf", "1e300"):
        cmds[("timeout", value)] = ([*NANLINT, "confirm", f"{paths['clean']}:make", "--device", "cpu",
                                     "--timeout", value], ROOT, {})
    project = tmp / "project"
    for name, body in PACKAGE.items():
        _write(project, name, body)
    cmds["module-spec"] = ([SCRIPT, "confirm", "mypkg.model:make", "--device", "cpu", "--output-format", "json"],
                           project, {})
    cmds["module-spec-top"] = ([SCRIPT, "confirm", "targets:gpt", "--device", "cpu"], project, {})
    cmds["file-relative"] = ([SCRIPT, "confirm", "mypkg/model.py:make", "--device", "cpu", "--output-format",
                              "json"], project, {})
    # without torch: a `torch` that cannot be imported comes first on the path
    no_torch = tmp / "no_torch"
    _write(no_torch, "torch/__init__.py", 'raise ImportError("No module named torch")\n')
    cmds["no-torch"] = ([*NANLINT, "confirm", f"{paths['clean']}:make", "--device", "cpu"], ROOT,
                        {"PYTHONPATH": str(no_torch)})
    return cmds


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("targets")
    cmds = _commands(tmp)

    def run(argv, cwd, extra):
        env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
        env.pop("CI", None)
        # a hang is a failure, reported as TimeoutExpired rather than waiting forever
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=240)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(run, *spec) for key, spec in cmds.items()}
        return {key: f.result() for key, f in futures.items()}


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_target_that_ends_the_process_is_an_error(runs, ending, place):
    # not a silent "nothing fired" (exit 0), not the target's own exit code, not "confirmed" (1)
    line = _one_error_line(runs[("ending", ending, place)])
    assert "before confirm finished" in line
    if ending.startswith("sys-exit"):
        assert f"sys.exit({ending[-1]})" in line
    elif ending.startswith("os-exit"):
        assert f"exit status {ending[-1]}" in line
    else:
        assert "KeyboardInterrupt" in line


def test_the_targets_prints_go_to_stderr_and_json_stays_valid(runs):
    proc = runs["prints"]
    assert proc.returncode == 1, proc.stderr
    entries = json.loads(proc.stdout)["entries"]
    assert [(e["status"], e["code"]) for e in entries] == [("confirmed", "NL002")]
    for text in ("printed at import", "printed in the factory", "printed in forward", "written to fd 1"):
        assert text in proc.stderr


@pytest.mark.parametrize("key", ["catches-base-exception", "ignores-sigalrm", "disarms-timer"])
def test_timeout_cannot_be_defeated_by_the_target(runs, key):
    line = _one_error_line(runs[key])
    assert "did not finish within --timeout 30 s" in line


def test_a_non_daemon_thread_does_not_keep_confirm_alive(runs):
    proc = runs["thread"]  # would block on the thread for an hour (the fixture's timeout fails it)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 confirmed, 0 not fired, 0 not reached, 0 unflagged."


@pytest.mark.parametrize("value", ["inf", "1e300"])
def test_timeout_without_a_limit(runs, value):
    proc = runs[("timeout", value)]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_timeout_nan_is_a_usage_error():
    proc = subprocess.run([*NANLINT, "confirm", "x.py:make", "--timeout", "nan"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "Invalid value for '--timeout'" in proc.stderr and "Traceback" not in proc.stderr


def test_an_empty_batch_is_run_not_blamed_on_the_model(runs):
    proc = runs["empty-batch"]
    assert proc.returncode == 0, proc.stderr
    assert [(e["status"], e["code"]) for e in json.loads(proc.stdout)["entries"]] == [("not_fired", "NL002")]


def test_an_exception_whose_str_raises_is_one_line(runs):
    assert "the factory raised Unprintable" in _one_error_line(runs["bad-str-factory"])
    # raised in every regime: an error entry in the report, exit 2, one line on stderr
    proc = runs["bad-str-forward"]
    assert proc.returncode == 2, proc.stderr
    entries = json.loads(proc.stdout)["entries"]
    assert [(e["status"], e["line"], e["op"]) for e in entries] == [("error", 11, "Unprintable")]
    assert entries[0]["message"].startswith("raised Unprintable (regimes example, eval, zeros")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the run raised 1 exception") and "Traceback" not in lines[0]


def test_embedding_with_padding_idx_in_the_factory(runs):
    proc = runs["embedding"]
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # an empty report is still the whole object
    assert report["entries"] == [] and report["notes"] == [
        "the inputs are token ids: scaled-x10, scaled-x100, scaled-x1000 applied to the output of the model's 1 "
        "embedding layer"]
    assert report["summary"] == {"confirmed": 0, "not_fired": 0, "not_reached": 0, "unflagged": 0, "error": 0}


def test_embedding_with_padding_idx_under_watch():
    with nanlint.watch(fill_uninitialized=True) as seen:
        embed = torch.nn.Embedding(10, 4, padding_idx=0)
        embed(torch.tensor([0, 2])).sum().backward()
        with torch.no_grad():
            embed.weight[3].fill_(1.0)  # a view made and written under no_grad
    assert seen.events == []
    assert embed.weight.grad is not None and bool((embed.weight.grad[0] == 0).all())


def test_warnings_are_not_confirms_output_unless_verbose(runs):
    # torch without numpy warns "Failed to initialize NumPy" at import; a target may warn too
    for key in ("warns", "clean"):
        assert runs[key].returncode == 0, runs[key].stderr
        assert runs[key].stderr == "", key
    assert "a warning from the target's import" in runs["warns-verbose"].stderr


def test_module_spec_from_the_project_folder(runs):
    # `mypkg.model:make` and `targets:gpt` resolve from the current directory, as `python -m` would
    proc = runs["module-spec"]
    assert proc.returncode == 1, proc.stderr
    assert [(e["status"], e["path"], e["line"]) for e in json.loads(proc.stdout)["entries"]] == [
        ("confirmed", "mypkg/layers.py", 6)]
    proc = runs["module-spec-top"]
    assert proc.returncode == 1, proc.stderr
    assert "CONFIRMED   targets.py:6: NL002" in proc.stdout


def test_file_spec_inside_a_package_keeps_relative_imports(runs):
    proc = runs["file-relative"]
    assert proc.returncode == 1, proc.stderr
    assert [(e["status"], e["path"]) for e in json.loads(proc.stdout)["entries"]] == [("confirmed", "mypkg/layers.py")]


@pytest.mark.parametrize("spec", ["targets.py:gpt:extra", "targets:gpt:extra", "targets.py:", ":gpt"])
def test_malformed_target_spec(tmp_path, spec):
    (tmp_path / "targets.py").write_text("def gpt():\n    pass\n")
    proc = subprocess.run([*NANLINT, "confirm", spec, "--device", "cpu"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert "target must be FILE.py:FACTORY or MODULE:FACTORY" in _one_error_line(proc)


def test_without_torch_the_hint_installs_from_the_project_not_pypi(runs):
    line = _one_error_line(runs["no-torch"])
    assert "needs torch" in line
    assert "git+https://" in line and "pip install 'nanlint[dynamic]'" not in line


def test_confirm_help_explains_every_option():
    proc = subprocess.run([*NANLINT, "confirm", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for option, words in (("--dtype", "The dtype the model runs in"), ("--seed", "Seeds torch"),
                          ("--output-format", "one object per report entry"),
                          ("--target-dtype", "--target-dtype only chooses which static findings")):
        assert option in text and words in text, option


# -- the user interrupts: exit 130, nothing left running ---------------------------------

SLEEPER = """
    import os
    import time
    import torch


    def make():
        with open(os.environ["NANLINT_TEST_MARK"], "w") as handle:
            handle.write(str(os.getpid()))
        while True:
            time.sleep(0.05)
    """


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_sleeper(tmp_path: Path):
    target = _write(tmp_path, "sleeper.py", SLEEPER)
    mark = tmp_path / "mark"
    env = dict(os.environ, NANLINT_TEST_MARK=str(mark))
    proc = subprocess.Popen([*NANLINT, "confirm", f"{target}:make", "--device", "cpu"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint if os.name == "posix" else None)
    for _ in range(2400):  # the target is running once it wrote its pid
        if mark.exists() and mark.read_text():
            return proc, int(mark.read_text())
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the target never started")


def default_sigint() -> None:
    """Ctrl-C reaches the child even when this suite runs as a background job
    of a shell without job control, which starts it with SIGINT ignored (an
    ignored signal stays ignored across exec, and Python then keeps it so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gone(pid: int) -> bool:
    for _ in range(400):
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(os.name != "posix", reason="signals to a process are POSIX")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_and_stops_the_target(tmp_path, signum):
    proc, target_pid = _start_sleeper(tmp_path)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Aborted!" not in err and "Traceback" not in err
    assert err.strip().splitlines() == ["interrupted: the target was stopped"]
    assert _gone(target_pid)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_the_target_does_not_outlive_a_killed_confirm(tmp_path):
    proc, target_pid = _start_sleeper(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert _gone(target_pid)
