"""The command line, run as users run it (a subprocess), on files in a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HAZARD = "import torch\ndef attend(q, k):\n    s = q.half() @ k.mT\n    return torch.exp(s)\n"
CLEAN = "import torch\n\ndef f(x):\n    return torch.exp(x - x.amax(-1, keepdim=True))\n"


def run(*args, cwd=None, stdin=None, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nanlint", *args],
        cwd=cwd, input=stdin, capture_output=True, text=True, env=full_env,
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / "bad.py").write_text(HAZARD)
    (tmp_path / "good.py").write_text(CLEAN)
    return tmp_path


def test_findings_exit_1_with_ruff_like_lines(project):
    proc = run("check", ".", cwd=project)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("bad.py:4:12: NL002 [unclamped-exp] `exp` of an argument")
    assert "11.09" in lines[0]
    assert lines[-1].startswith("Found 1 finding.")
    assert "--unsafe-fixes" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_clean_exit_0(project):
    proc = run("check", "good.py", cwd=project)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "All checks passed!"


def test_exit_zero_and_statistics(project):
    proc = run("check", "--exit-zero", "--statistics", ".", cwd=project)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].split("\t")[:2] == ["1", "NL002"]


def test_json_schema_is_exact(project):
    proc = run("check", "--output-format", "json", ".", cwd=project)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert len(data) == 1
    item = data[0]
    assert set(item) == {"code", "name", "message", "path", "line", "column", "end_line", "end_column", "fix", "cell",
                         "confidence"}
    assert (item["code"], item["path"], item["line"], item["column"]) == ("NL002", "bad.py", 4, 12)
    assert (item["end_line"], item["end_column"]) == (4, 24)
    assert set(item["fix"]) == {"applicability", "message", "edits"}
    assert item["fix"]["applicability"] == "unsafe"
    for edit in item["fix"]["edits"]:
        assert set(edit) == {"content", "line", "column", "end_line", "end_column"}


def test_stdin_with_filename(project):
    proc = run("check", "-", "--stdin-filename", "model.py", stdin=HAZARD, cwd=project)
    assert proc.returncode == 1
    assert proc.stdout.startswith("model.py:4:12: NL002")


def test_select_ignore_and_unknown_code(project):
    assert run("check", "--ignore", "NL002", ".", cwd=project).returncode == 0
    assert run("check", "--select", "NL00", "--ignore", "NL002", ".", cwd=project).returncode == 0
    assert run("check", "--select", "NL002", ".", cwd=project).returncode == 1
    proc = run("check", "--select", "NL999", ".", cwd=project)
    assert proc.returncode == 2
    assert "unknown rule selector `NL999`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bfloat16_target_turns_off_float16_only_rules(project):
    proc = run("check", "--target-dtype", "bfloat16", ".", cwd=project)
    assert proc.returncode == 0, proc.stdout
    proc = run("check", "--target-dtype", "float8", ".", cwd=project)
    assert proc.returncode == 2 and "unknown target dtype" in proc.stderr


def test_missing_path_is_an_error_but_other_files_are_checked(project):
    proc = run("check", "bad.py", "nope.py", cwd=project)
    assert proc.returncode == 2
    assert "nope.py: no such file or directory" in proc.stderr
    assert "bad.py:4:12: NL002" in proc.stdout


def test_syntax_error_is_a_finding_and_others_still_checked(project):
    (project / "broken.py").write_text("def f(:\n    pass\n")
    proc = run("check", ".", cwd=project)
    assert proc.returncode == 1
    assert "broken.py:1:" in proc.stdout and "NL000 [syntax-error]" in proc.stdout
    assert "bad.py:4:12: NL002" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_undecodable_file_is_an_io_error(project):
    (project / "latin.py").write_bytes(b"x = '\xe9'\n")
    proc = run("check", ".", cwd=project)
    assert proc.returncode == 2
    assert "latin.py: cannot decode as utf-8" in proc.stderr
    assert "bad.py:4:12" in proc.stdout


def test_config_from_pyproject_and_unknown_key(project):
    (project / "pyproject.toml").write_text('[tool.nanlint]\nignore = ["NL002"]\n')
    assert run("check", ".", cwd=project).returncode == 0
    (project / "pyproject.toml").write_text('[tool.nanlint]\nignroe = ["NL002"]\n')
    proc = run("check", ".", cwd=project)
    assert proc.returncode == 2
    assert "unknown key `ignroe`" in proc.stderr


def test_invalid_toml_is_exit_2(project):
    (project / "pyproject.toml").write_text("[tool.nanlint\nselect = [")
    proc = run("check", ".", cwd=project)
    assert proc.returncode == 2
    assert "invalid TOML" in proc.stderr and "Traceback" not in proc.stderr


def test_per_file_ignores_and_explicit_config(project, tmp_path):
    cfg = project / "nanlint.toml"
    cfg.write_text('[per-file-ignores]\n"bad.py" = ["NL002"]\n')
    assert run("check", "--config", str(cfg), ".", cwd=project).returncode == 0


def test_default_excludes_and_exclude_setting(project):
    venv = project / ".venv" / "lib"
    venv.mkdir(parents=True)
    (venv / "x.py").write_text(HAZARD)
    build = project / "vendor"
    build.mkdir()
    (build / "y.py").write_text(HAZARD)
    proc = run("check", "--output-format", "json", ".", cwd=project)
    paths = {f["path"] for f in json.loads(proc.stdout)}
    assert paths == {"bad.py", os.path.join("vendor", "y.py")}
    (project / "pyproject.toml").write_text('[tool.nanlint]\nextend-exclude = ["vendor"]\n')
    proc = run("check", "--output-format", "json", ".", cwd=project)
    assert {f["path"] for f in json.loads(proc.stdout)} == {"bad.py"}


def test_rule_docs_command():
    proc = run("rule", "NL002")
    assert proc.returncode == 0
    assert "## Why is this bad?" in proc.stdout and "11.09" in proc.stdout
    listing = run("rule", "--all")
    assert listing.returncode == 0 and "NL002" in listing.stdout and "unclamped-exp" in listing.stdout
    assert run("rule", "NL999").returncode == 2
    # --all lists every rule with its default and fix, the same as the registry
    from nanlint.registry import all_rules

    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("NL000", "syntax-error", "on", "-")] + [
        (r.code, r.name, "on" if r.default_enabled else "off", r.fix_applicability or "-") for r in all_rules()]
    as_json = json.loads(run("rule", "--all", "--output-format", "json").stdout)
    assert [d["code"] for d in as_json] == ["NL000"] + [r.code for r in all_rules()]
    one = json.loads(run("rule", "nl006", "--output-format", "json").stdout)
    assert one[0]["name"] == "tanh-gate" and "## Fix safety" in one[0]["documentation"]


def test_help_documents_exit_codes():
    proc = run("check", "--help")
    assert proc.returncode == 0
    assert "Exit codes" in proc.stdout and "2  usage" in proc.stdout


def test_output_is_deterministic_across_hash_seeds(project):
    (project / "more.py").write_text(HAZARD * 3)
    outs = {run("check", "--output-format", "json", ".", cwd=project, env={"PYTHONHASHSEED": seed}).stdout
            for seed in ("0", "1", "12345")}
    assert len(outs) == 1


def test_static_linting_never_imports_torch(project):
    code = textwrap.dedent(
        """
        import sys
        sys.modules['torch'] = None  # any `import torch` now raises ImportError
        from nanlint.cli import main
        sys.argv = ['nanlint', 'check', '--select', 'ALL', '.']
        try:
            main()
        except SystemExit as exc:
            print('exit', exc.code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert "exit 1" in proc.stdout, proc.stderr
    assert "NL002" in proc.stdout


def test_files_over_max_file_size_are_skipped_with_a_warning(project):
    (project / "pyproject.toml").write_text("[tool.nanlint]\nmax-file-size = 40\n")
    proc = run("check", ".", cwd=project)
    assert proc.returncode == 0, proc.stdout
    assert "warning: bad.py: skipped" in proc.stderr and "max-file-size" in proc.stderr
    (project / "pyproject.toml").write_text("[tool.nanlint]\nmax-file-size = 0\n")
    assert run("check", ".", cwd=project).returncode == 1
    (project / "pyproject.toml").write_text('[tool.nanlint]\nmax-file-size = "big"\n')
    assert run("check", ".", cwd=project).returncode == 2


def test_directories_yield_py_files_not_stubs(project):
    (project / "stub.pyi").write_text("def f(eps: float = 1e-12) -> None: ...\n")
    proc = run("check", "--output-format", "json", ".", cwd=project)
    assert {f["path"] for f in json.loads(proc.stdout)} == {"bad.py"}
