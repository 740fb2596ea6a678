"""The findings cache: used when nothing changed, bypassed by --no-cache,
invalidated by content, settings and code changes, safe when corrupt."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanlint.cache import Cache
from nanlint.finding import Finding

HAZARD = "import torch\ny = torch.exp(q.half() @ k.mT)\n"


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, capture_output=True, text=True)


def _entries(root: Path):
    return sorted((root / ".nanlint_cache").glob("v*/*/*.json"))


def _entry_bytes(key: str, payload: bytes) -> bytes:
    """An entry as nanlint writes it: its key and the SHA-256 of its findings."""
    return b"nanlint-cache-entry 1\n" + f"{key}\n{hashlib.sha256(payload).hexdigest()}\n".encode() + payload


def _payload(entry: Path) -> bytes:
    return entry.read_bytes().split(b"\n", 3)[3]


def test_second_run_reads_the_cache_and_no_cache_bypasses_it(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    first = run("check", "--output-format", "json", ".", cwd=tmp_path)
    (entry,) = _entries(tmp_path)
    assert (tmp_path / ".nanlint_cache" / ".gitignore").read_text().strip().endswith("*")
    assert (tmp_path / ".nanlint_cache" / "CACHEDIR.TAG").read_text().startswith(
        "Signature: 8a477f597d28d172789f06886806bc55")
    # Plant a marker in the cached entry: a run that reports it read the cache.
    data = json.loads(_payload(entry))
    data[0]["message"] = "from the cache"
    entry.write_bytes(_entry_bytes(entry.stem, json.dumps(data).encode()))
    cached = run("check", "--output-format", "json", ".", cwd=tmp_path)
    assert json.loads(cached.stdout)[0]["message"] == "from the cache"
    fresh = run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)
    assert fresh.stdout == first.stdout


def test_changed_content_or_settings_miss(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(HAZARD)
    run("check", ".", cwd=tmp_path)
    target.write_text(HAZARD + "z = torch.exp(a @ b.T)\n")
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


def test_keys_depend_on_version_and_python(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "c", "settings")
    finding = Finding("NL002", "unclamped-exp", "m", "a.py", 1, 1, 1, 2)
    key = cache.key(b"data", "a.py", ["NL002"])
    cache.put(key, [finding])
    assert cache.get(key) == [finding]
    import nanlint.cache as module

    monkeypatch.setattr(module, "__version__", "9.9.9")
    assert Cache(tmp_path / "c", "settings").get(key) is None
    monkeypatch.undo()
    # the Python that runs nanlint decides which syntax parses (NL000)
    monkeypatch.setattr(sys.implementation, "cache_tag", "cpython-399")
    assert Cache(tmp_path / "c", "settings").key(b"data", "a.py", ["NL002"]) != key


def test_max_file_size_is_in_the_key(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    for limit in (1_000_000, 2_000_000):
        (tmp_path / "pyproject.toml").write_text(f"[tool.nanlint]\nmax-file-size = {limit}\n")
        assert run("check", ".", cwd=tmp_path).returncode == 1
    assert len(_entries(tmp_path)) == 2


# -- first, do no harm: the cache removes only what it provably created -----------------

HEX = "0123456789abcdef"


def _victim(directory: Path) -> None:
    """Folders a user may have, some named like the cache's own layout."""
    (directory / "venv" / "lib").mkdir(parents=True)
    (directory / "venv" / "lib" / "site.py").write_text("keep me\n")
    (directory / "vendor").mkdir()
    (directory / "vendor" / "notes.txt").write_text("keep me too\n")
    shard = directory / f"v0.0.1-{HEX}" / "ab"
    shard.mkdir(parents=True)
    (shard / ("ab" + "0" * 62 + ".json")).write_text("[]")
    (directory / f"v0.0.1-{HEX}" / "tmp").mkdir()
    (directory / f"v0.0.1-{HEX}" / "tmp" / ("ab" + "0" * 62 + ".1.0123456789abcdef.tmp")).write_text("x")


def _tree(directory: Path):
    """Every path under ``directory`` with its bytes (files) or target (symlinks)."""
    out = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", p.read_bytes())
    return out


def _scenario(tmp_path: Path, name: str) -> Path:
    """A project whose cache settings point at a directory that is not the cache's;
    returns the directory nanlint runs in."""
    repo = tmp_path / "repo"
    outside = tmp_path / "outside"
    repo.mkdir()
    outside.mkdir()
    _victim(repo)
    _victim(outside)
    if name == "cache-dir is the project":
        (repo / "pyproject.toml").write_text('[tool.nanlint]\ncache-dir = "."\n')
    elif name == "committed symlink":
        (repo / ".nanlint_cache").symlink_to("../outside")
    elif name == "symlink to a tagged cache":
        # even a directory holding nanlint's tag is not used through a symlink
        (outside / "CACHEDIR.TAG").write_text(
            "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by nanlint.\n")
        (repo / ".nanlint_cache").symlink_to("../outside")
    elif name == "absolute cache-dir":
        (repo / "pyproject.toml").write_text(f'[tool.nanlint]\ncache-dir = "{outside}"\n')
    elif name == "parent pyproject":
        (tmp_path / "pyproject.toml").write_text('[tool.nanlint]\ncache-dir = "outside"\n')
    elif name == "cache-dir is a file":
        (repo / "pyproject.toml").write_text('[tool.nanlint]\ncache-dir = "venv/lib/site.py"\n')
    (repo / "m.py").write_text(HAZARD)
    return repo


SCENARIOS = ["cache-dir is the project", "committed symlink", "symlink to a tagged cache",
             "absolute cache-dir", "parent pyproject", "cache-dir is a file"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_directory_the_cache_did_not_create_is_never_touched(tmp_path, name):
    repo = _scenario(tmp_path, name)
    before = _tree(tmp_path)
    for _ in range(2):
        proc = run("check", ".", cwd=repo)
        assert proc.returncode == 1 and "m.py:2:5: NL002" in proc.stdout, proc.stderr
        assert "Traceback" not in proc.stderr
        (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
        assert "cache disabled" in warning and "nanlint" in warning
    assert _tree(tmp_path) == before


def test_the_cache_removes_only_its_own_files_of_other_versions(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    run("check", ".", cwd=tmp_path)
    cache = tmp_path / ".nanlint_cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    _victim(outside)
    # an old version's entries (the cache's own: removed) next to things that are not
    old = cache / f"v0.0.1-{HEX}"
    (old / "ab").mkdir(parents=True)
    (old / "ab" / ("ab" + "1" * 62 + ".json")).write_text("[]")
    (old / "tmp").mkdir()
    (old / "tmp" / ("ab" + "1" * 62 + ".123.0123456789abcdef.tmp")).write_text("x")
    gone = cache / f"v0.0.2-{HEX}" / "cd"
    gone.mkdir(parents=True)
    (gone / ("cd" + "2" * 62 + ".json")).write_text("[]")
    (old / "notes.txt").write_text("mine\n")
    (old / "cd").symlink_to(outside / f"v0.0.1-{HEX}" / "ab")
    (cache / f"v0.0.3-{HEX}").symlink_to(outside / f"v0.0.1-{HEX}")
    (cache / "vendor").mkdir()
    (cache / "vendor" / "x.json").write_text("{}")
    outside_before = _tree(outside)
    proc = run("check", ".", cwd=tmp_path)
    assert proc.returncode == 1 and not proc.stderr
    assert _tree(outside) == outside_before
    assert not (cache / f"v0.0.2-{HEX}").exists()
    assert sorted(p.name for p in old.iterdir()) == ["cd", "notes.txt"]
    assert (old / "cd").is_symlink() and (cache / f"v0.0.3-{HEX}").is_symlink()
    assert (cache / "vendor" / "x.json").read_text() == "{}"


def test_an_empty_directory_is_adopted(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    (tmp_path / "lint-cache").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.nanlint]\ncache-dir = "lint-cache"\n')
    proc = run("check", ".", cwd=tmp_path)
    assert proc.returncode == 1 and not proc.stderr
    assert (tmp_path / "lint-cache" / "CACHEDIR.TAG").is_file()
    assert len(list((tmp_path / "lint-cache").glob("v*/*/*.json"))) == 1


# -- integrity: anything but an entry nanlint wrote for this key is a miss ----------------


def _deep(entry: Path) -> None:
    entry.write_bytes(_entry_bytes(entry.stem, b"[" * 200_000 + b"]" * 200_000))


def _fifo(entry: Path) -> None:
    entry.unlink()
    os.mkfifo(entry)


def _dev_zero(entry: Path) -> None:
    entry.unlink()
    entry.symlink_to("/dev/zero")


def _other_key(entry: Path) -> None:
    # a well-formed entry of another file, copied over this one
    entry.write_bytes(_entry_bytes("f" * 64, b"[]"))


def _null_line(entry: Path) -> None:
    data = json.loads(_payload(entry))
    data[0]["line"] = None
    entry.write_bytes(_entry_bytes(entry.stem, json.dumps(data).encode()))


CORRUPTIONS = {
    "empty list": lambda e: e.write_text("[]"),
    "an object": lambda e: e.write_text('{"a":1}'),
    "line null, raw": lambda e: e.write_text(
        json.dumps([dict(json.loads(_payload(e))[0], line=None)])),
    "line null, checksummed": _null_line,
    "wrong checksum": lambda e: e.write_bytes(e.read_bytes().replace(b"NL002", b"NL003")),
    "another key": _other_key,
    "200k-deep JSON": _deep,
    "200k-deep JSON, raw": lambda e: e.write_bytes(b"[" * 200_000 + b"]" * 200_000),
    "a FIFO": _fifo,
    "a symlink to /dev/zero": _dev_zero,
    "a directory": lambda e: (e.unlink(), e.mkdir()),
    "empty file": lambda e: e.write_bytes(b""),
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_corrupt_or_forged_entries_are_misses(tmp_path, how):
    (tmp_path / "m.py").write_text(HAZARD)
    first = run("check", "--output-format", "json", ".", cwd=tmp_path)
    (entry,) = _entries(tmp_path)
    CORRUPTIONS[how](entry)
    # a hang (a FIFO, /dev/zero) would fail here rather than block the suite
    proc = subprocess.run([sys.executable, "-m", "nanlint", "check", "--output-format", "json", "."],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == first.stdout


# -- temp files: a failed write leaves none, a killed run's are removed later ------------


def _limit_file_size():
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_a_failed_entry_write_leaves_no_temp_file(tmp_path):
    """A full disk, simulated by a file-size limit that the tag (179 bytes)
    passes and an entry (over 600 bytes) does not."""
    (tmp_path / "m.py").write_text(HAZARD)
    proc = subprocess.run([sys.executable, "-m", "nanlint", "check", "."], cwd=tmp_path,
                          capture_output=True, text=True, preexec_fn=_limit_file_size)
    assert proc.returncode == 1 and "NL002" in proc.stdout, proc.stderr
    cache = tmp_path / ".nanlint_cache"
    assert cache.is_dir()
    assert not [p for p in cache.rglob("*") if p.name.endswith((".tmp", ".json"))]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_killed_runs_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "m.py").write_text(HAZARD)
    run("check", ".", cwd=tmp_path)
    (tmp,) = (tmp_path / ".nanlint_cache").glob("v*/tmp")
    key = "ab" * 32
    dead = tmp / f"{key}.{_dead_pid()}.{HEX}.tmp"
    alive = tmp / f"{key}.{os.getpid()}.{HEX}.tmp"
    foreign = tmp / "notes.tmp"
    for p in (dead, alive, foreign):
        p.write_text("x")
    link = tmp / f"{key}.{_dead_pid()}.{'f' * 16}.tmp"  # the right name, but not a file it wrote
    link.symlink_to(foreign)
    run("check", "--no-cache", ".", cwd=tmp_path)
    assert dead.exists()  # --no-cache touches nothing
    assert run("check", ".", cwd=tmp_path).returncode == 1
    assert sorted(p.name for p in tmp.iterdir()) == sorted([alive.name, foreign.name, link.name])
    assert foreign.read_text() == "x"


def test_worker_processes_write_and_read_the_cache(tmp_path):
    for i in range(8):
        (tmp_path / f"m{i}.py").write_text(HAZARD)
    first = run("check", "-j", "2", ".", cwd=tmp_path)
    assert first.returncode == 1 and not first.stderr
    assert len(_entries(tmp_path)) == 8
    again = run("check", "-j", "2", ".", cwd=tmp_path)
    assert (again.returncode, again.stdout, again.stderr) == (1, first.stdout, "")


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
