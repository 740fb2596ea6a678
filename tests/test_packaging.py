"""The package as users install it: a wheel with `nanlint.rules` and no
top-level `rules` package, and a README that tells the truth about the rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from helpers import ROOT


def test_wheel_maps_rules_folder_to_nanlint_rules(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("nanlint-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "nanlint/rules/__init__.py" in names
    assert "nanlint/rules/nl002_unclamped_exp.py" in names
    assert not any(n.startswith("rules/") for n in names)
    # every subpackage of nanlint/ ships (nanlint.analysis is imported by the rules)
    for init in sorted((ROOT / "nanlint").glob("*/__init__.py")):
        assert init.relative_to(ROOT).as_posix() in names
    top_level = {n.split("/")[0] for n in names}
    assert top_level <= {"nanlint", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}


def test_readme_rule_table_is_current():
    from nanlint.docs import update_readme

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert update_readme(text) == text, "run `python -m nanlint.docs --write`"
