"""The README's examples run as written."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _setup_section() -> str:
    return re.search(r"^## Set-up\n(.*?)(?=^## )", README, re.S | re.M).group(1)


def test_setup_is_two_commands_that_ci_reads_from_the_readme():
    """Two commands that each succeed (no `nanlint check fixtures/`, which exits
    1), then the test command; `.ci/run` takes them from this section rather
    than keeping its own copy, so the two cannot drift."""
    setup, test = re.findall(r"```sh\n(.*?)```", _setup_section(), re.S)[:2]
    commands = setup.strip().splitlines()
    assert len(commands) == 2 and all(c.startswith("pip install ") for c in commands)
    assert "&&" not in setup and "nanlint check" not in setup
    assert test.strip() == "pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "## Set-up" in ci and "torch==" not in ci and ".[dev]" not in ci
    # the CPU-only build is documented through PyTorch's public CPU wheel index
    assert "--index-url https://download.pytorch.org/whl/cpu" in _setup_section()


def test_dev_extra_installs_what_the_tests_import():
    """torch's wheels do not bring numpy, and without it `import torch` writes a
    two-line warning to stderr: the dev extra (via dynamic) must install it."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in requires("nanlint")]
    dynamic = {r.name for r in reqs if r.marker and r.marker.evaluate({"extra": "dynamic"})}
    dev = {(r.name, tuple(sorted(r.extras))) for r in reqs if r.marker and r.marker.evaluate({"extra": "dev"})}
    assert {"torch", "numpy"} <= dynamic
    assert ("nanlint", ("dynamic",)) in dev


def test_no_example_installs_nanlint_from_pypi():
    """nanlint is not on PyPI: every copy-paste install names a git URL or a path."""
    for line in README.splitlines():
        for match in re.finditer(r"pip install\s+('[^']*'|\"[^\"]*\"|[^\s`]+)", line):
            spec = match.group(1).strip("'\"")
            if "nanlint" in spec:
                assert "git+" in spec or "/" in spec or spec.startswith("."), line


def test_quick_start_output_is_what_nanlint_prints(tmp_path):
    section = README.split("## Use it on your project", 1)[1].split("\n## ", 1)[0]
    install, command = re.search(r"```sh\n(.*?)```", section, re.S).group(1).strip().splitlines()
    assert install.startswith("pip install 'nanlint @ git+https://") and command == "nanlint check ."
    expected = re.search(r"```\n(model\.py:.*?)```", section, re.S).group(1)
    # attention scores: an activation, so the finding is high confidence (shown by default) in a
    # project that runs in pure half (under autocast alone exp is float32: medium)
    (tmp_path / "model.py").write_text("import torch\nDTYPE = torch.float16\n" + "\n" * 9
                                       + "def f(q, k):\n    x = q @ k.mT\n    weights = torch.exp(x)\n")
    proc = _shell(command, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == expected


def test_confirm_example_output_is_what_nanlint_prints(tmp_path):
    pytest.importorskip("torch")
    source = re.search(r"```python\n(# models/flow.py\n.*?)```", README, re.S).group(1)
    expected = re.search(r"```\n(nanlint confirm: .*?)```", README, re.S).group(1)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "flow.py").write_text(source)
    proc = subprocess.run(
        [sys.executable, "-m", "nanlint", "confirm", "models/flow.py:make", "--device", "cpu", "--dtype", "float16"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == expected


# -- the ecosystem sections: each example is executed -------------------------------------------

HAZARD = ("import torch\nclass Attention(torch.nn.Module):\n    def forward(self, q, k):\n        return torch.exp(q @ k.transpose(-2, -1))\n"
          "model = Attention().half()\n")


def _block(heading: str, lang: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def _shell(command: str, cwd):
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True)


def test_github_actions_workflow_steps_run(tmp_path):
    yaml = pytest.importorskip("yaml")
    jsonschema = pytest.importorskip("jsonschema")
    workflow = yaml.safe_load(_block("### GitHub Actions", "yaml"))
    steps = workflow["jobs"]["nanlint"]["steps"]
    commands = [s["run"] for s in steps if "run" in s and not s["run"].startswith("pip install")]
    assert len(commands) == 2
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    (tmp_path / "train.py").write_text(HAZARD)
    annotate = _shell(commands[0], tmp_path)
    assert annotate.returncode == 1  # fails the job
    assert annotate.stdout.startswith("::error title=nanlint NL002 (unclamped-exp),file=train.py,line=4,")
    sarif = _shell(commands[1], tmp_path)
    assert sarif.returncode == 0, sarif.stderr
    log = json.loads((tmp_path / upload["with"]["sarif_file"]).read_text())
    schema = json.loads((ROOT / "tests" / "data" / "sarif-2.1.0-rtm.5.json").read_text())
    jsonschema.Draft4Validator(schema).validate(log)
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["NL002"]


def test_notebook_example_output_is_what_nanlint_prints():
    block = _block("### Notebooks", "")
    command, expected = block.split("\n", 1)
    assert command.startswith("$ ")
    proc = _shell(command[2:], ROOT)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == expected


def test_configuration_example_is_valid_and_shown_by_show_settings(tmp_path):
    import tomllib

    (tmp_path / "pyproject.toml").write_text(_block("## Configuration", "toml"))
    proc = subprocess.run([sys.executable, "-m", "nanlint", "check", "--show-settings", "--ignore", "NL006"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shown = tomllib.loads(proc.stdout)
    assert shown["ignore"] == ["NL004", "NL006"]
    assert shown["per-file-ignores"] == {"tests/*": ["NL004"], "conftest.py": ["ALL"]}
    assert shown["target-dtypes"] == ["float16", "bfloat16"]
    assert "NL005" in shown["rules"] and "NL004" not in shown["rules"]
    excerpt = _block("--show-files` lists the files a run would check:", "")
    assert excerpt.splitlines()[0] == "$ nanlint check --show-settings --ignore NL006"
    for line in excerpt.splitlines()[1:]:
        if line != "..." and not line.startswith(("# settings from", "# relative paths", "rules =")):
            assert line in proc.stdout.splitlines()


def test_pre_commit_snippet_runs_the_hooks(tmp_path):
    """A real pre-commit run, with the README's snippet pointing at a snapshot of
    this checkout (what pre-commit would clone), on a repository with a hazard
    and a clean file."""
    yaml = pytest.importorskip("yaml")
    if shutil.which("git") is None or importlib.util.find_spec("pre_commit") is None:
        pytest.skip("needs git and pre-commit")
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "cache"), GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    env.pop("CI", None)
    # the hook source: this checkout's files as a one-commit repository
    source = tmp_path / "nanlint-src"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        if rel.startswith(("bench/", "tests/", "fixtures/")) or not (ROOT / rel).is_file():
            continue
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(["git", *args], cwd=source, check=True, env=env)
    config = yaml.safe_load(_block("### pre-commit", "yaml"))
    hooks = config["repos"][0]["hooks"]
    assert [h["id"] for h in hooks] == ["nanlint"]
    # the README shows the form pre-commit needs without release tags: a full commit SHA
    assert config["repos"][0]["rev"] == "<full commit sha>"
    config["repos"][0]["repo"] = str(source)
    config["repos"][0]["rev"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                                               text=True, check=True, env=env).stdout.strip()
    config["repos"][0]["hooks"] = [{"id": "nanlint"}, {"id": "nanlint-fix"}]
    # the user's repository
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    (work / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    (work / "clean.py").write_text("import torch\ny = torch.exp(x - x.amax(-1, keepdim=True))\n")
    (work / "gate.py").write_text("import torch\np = torch.sigmoid(x)\ny = torch.log(p + 1e-8)\n")
    # the project trains under autocast: a float16 hazard is shown at the default confidence
    (work / "train.py").write_text("import torch\nwith torch.autocast('cuda'):\n    loss = model(x)\n")
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)

    def pre_commit(hook, *files):
        return subprocess.run([sys.executable, "-m", "pre_commit", "run", hook, "--files", *files], cwd=work,
                              capture_output=True, text=True, env=env, timeout=900)

    clean = pre_commit("nanlint", "clean.py")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert re.search(r"^nanlint\.+Passed$", clean.stdout, re.M)
    bad = pre_commit("nanlint", "clean.py", "gate.py")
    assert bad.returncode == 1
    assert re.search(r"^nanlint\.+Failed$", bad.stdout, re.M)
    assert "gate.py:3:19: NL001 [tiny-epsilon]" in bad.stdout
    # the fix hook applies only safe fixes: NL001's is unsafe, so the file stays
    fixed = pre_commit("nanlint-fix", "gate.py")
    assert fixed.returncode == 1 and "1 more fix available with `--unsafe-fixes`" in fixed.stdout
    assert (work / "gate.py").read_text() == "import torch\np = torch.sigmoid(x)\ny = torch.log(p + 1e-8)\n"
