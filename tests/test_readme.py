"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_setup_commands_are_the_ones_ci_runs():
    block = re.search(r"## Set-up.*?```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert block == ["pip install torch==2.13.0 && pip install -e '.[dev]' && nanlint check fixtures/", "pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and "-e '.[dev]'" in ci and "nanlint check fixtures/" in ci
    assert re.search(r"^pytest$", ci, re.M)


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
