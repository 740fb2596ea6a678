"""The findings cache: used when nothing changed, bypassed by --no-cache,
invalidated by content, settings and code changes, safe when corrupt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nanlint.cache import Cache
from nanlint.finding import Finding

HAZARD = "import torch\ny = torch.exp(q @ k)\n"


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, capture_output=True, text=True)


def _entries(root: Path):
    return sorted((root / ".nanlint_cache").glob("v*/*/*.json"))


def test_second_run_reads_the_cache_and_no_cache_bypasses_it(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    first = run("check", "--output-format", "json", ".", cwd=tmp_path)
    (entry,) = _entries(tmp_path)
    assert (tmp_path / ".nanlint_cache" / ".gitignore").read_text().strip().endswith("*")
    # Plant a marker in the cached entry: a run that reports it read the cache.
    data = json.loads(entry.read_text())
    data[0]["message"] = "from the cache"
    entry.write_text(json.dumps(data))
    cached = run("check", "--output-format", "json", ".", cwd=tmp_path)
    assert json.loads(cached.stdout)[0]["message"] == "from the cache"
    fresh = run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)
    assert fresh.stdout == first.stdout


def test_changed_content_or_settings_miss(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    run("check", ".", cwd=tmp_path)
    target.write_text(HAZARD + "z = torch.exp(a @ b)\n")
    proc = run("check", "--output-format", "json", ".", cwd=tmp_path)
    assert len(json.loads(proc.stdout)) == 2
    proc = run("check", "--ignore", "NL002", ".", cwd=tmp_path)
    assert proc.returncode == 0
    assert len(_entries(tmp_path)) == 3


def test_corrupt_entry_is_a_miss(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    run("check", ".", cwd=tmp_path)
    (entry,) = _entries(tmp_path)
    entry.write_text("{not json")
    proc = run("check", ".", cwd=tmp_path)
    assert proc.returncode == 1 and "NL002" in proc.stdout


def test_cache_dir_setting(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    (tmp_path / "pyproject.toml").write_text('[tool.nanlint]\ncache-dir = "build/lint-cache"\n')
    run("check", "m.py", cwd=tmp_path)
    assert list((tmp_path / "build" / "lint-cache").glob("v*/*/*.json"))
    assert not (tmp_path / ".nanlint_cache").exists()


def test_other_versions_are_pruned_and_keys_depend_on_version(tmp_path, monkeypatch):
    stale = tmp_path / "v0.0.1-deadbeef"
    stale.mkdir(parents=True)
    cache = Cache(tmp_path, "settings")
    finding = Finding("NL002", "unclamped-exp", "m", "a.py", 1, 1, 1, 2)
    key = cache.key(b"data", "a.py", ["NL002"])
    cache.put(key, [finding])
    assert not stale.exists()
    assert cache.get(key) == [finding]
    import nanlint.cache as module

    monkeypatch.setattr(module, "__version__", "9.9.9")
    assert Cache(tmp_path, "settings").get(key) is None


def test_code_fingerprint_covers_the_analysis_subpackage():
    import os

    import nanlint.analysis.values as values
    from nanlint.cache import code_fingerprint

    before = code_fingerprint()
    st = os.stat(values.__file__)
    try:
        os.utime(values.__file__, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert code_fingerprint() != before
    finally:
        os.utime(values.__file__, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert code_fingerprint() == before
