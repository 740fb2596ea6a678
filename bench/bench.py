"""nanlint's speed and memory, as ratios measured in one run on real code.

    python bench/bench.py                 # torch + transformers models, 3 runs each
    python bench/bench.py --quick         # a small smoke run (used by CI)
    python bench/bench.py --torchfix      # also time TorchFix (pip installs it)
    python bench/bench.py --corpus DIR    # measure DIR instead (repeatable)

Corpora: the Python sources of the installed `torch` package and of
`transformers/models` (`pip install transformers`). For each corpus it prints
files, lines, how many files no default rule can trigger (not parsed), and the
median wall time of:

- parse: a bare `libcst.parse_module` of every file, on --jobs processes;
- cold: `nanlint check --no-cache` with the default rules, and with ALL rules;
- warm: the same with a filled cache;

(parse and the two cold runs alternate, run by run, and cold/parse is the
median of each run's own ratio: on a shared machine the load drifts over
minutes, which moves a ratio of phases measured apart by 10-20%)

nanlint runs as an installed package does: byte-compiled. pip compiles a
wheel's modules when it installs it; an editable checkout gets its bytecode
on first import, except where PYTHONDONTWRITEBYTECODE is set, and there every
process (the CLI and each worker) would compile nanlint's 50 modules again,
0.16 s each time. So the bench compiles them once first, and says so.

then the ratios the project targets: cold/parse <= 1.3, cold/warm >= 10,
TorchFix/nanlint(ALL) >= 5 (same files, same process count), peak RSS of any
nanlint process < 400 MB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

RUNNER = r"""
import resource, sys, json
from nanlint.cli import main
out = sys.argv.pop(1)
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
with open(out, "w") as fh:
    json.dump({"exit": code, "peak_kb": peak}, fh)
"""


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed: pip install {name}")
    return Path(list(spec.submodule_search_locations)[0])


def python_files(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _parse_one(path: str) -> int:
    import libcst

    text = Path(path).read_bytes().decode("utf-8", "replace")
    try:
        libcst.parse_module(text)
    except Exception:
        return 0
    return 1


def parse_all(files: Sequence[Path], jobs: int) -> float:
    start = time.perf_counter()
    if jobs <= 1:
        for f in files:
            _parse_one(str(f))
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
            list(pool.map(_parse_one, [str(f) for f in files], chunksize=8))
    return time.perf_counter() - start


def run_nanlint(args: Sequence[str], cwd: Path) -> Tuple[float, int, int]:
    """(seconds, exit code, peak RSS in MB of the nanlint process or any worker)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, out, "check", "--exit-zero", *args],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    elapsed = time.perf_counter() - start
    try:
        info = json.loads(Path(out).read_text())
    finally:
        os.unlink(out)
    if info["exit"] not in (0, None):
        raise SystemExit(f"nanlint exited {info['exit']}: {proc.stderr[-2000:]}")
    return elapsed, info["exit"] or 0, info["peak_kb"] // 1024


def median_time(func: Callable[[], float], runs: int) -> float:
    return statistics.median(func() for _ in range(runs))


def skipped_files(files: Sequence[Path], select: str) -> int:
    from nanlint.dtypes import DTYPES
    from nanlint.engine import may_trigger
    from nanlint.registry import select_rules

    rules = [r for r in select_rules(None if select == "default" else [select])
             if r.active([DTYPES["float16"]])]
    count = 0
    for f in files:
        text = f.read_bytes().decode("utf-8", "replace")
        if not any(may_trigger(r, text) for r in rules):
            count += 1
    return count


def torchfix_binary() -> Path:
    """TorchFix in a virtualenv of its own: it pins libcst < 1.6, which must not
    replace the libcst nanlint runs with."""
    venv = Path.home() / ".cache" / "nanlint-bench" / "torchfix-venv"
    binary = venv / "bin" / "torchfix"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "torchfix"], check=True)
    return binary


def torchfix_time(corpus: Path, jobs: int) -> float:
    binary = torchfix_binary()
    start = time.perf_counter()
    proc = subprocess.run([str(binary), "--select", "ALL", f"--jobs={jobs}", str(corpus)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"torchfix exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed


def bench_corpus(name: str, corpus: Path, jobs: int, runs: int, with_torchfix: bool) -> Dict[str, float]:
    from nanlint.config import Settings

    limit = Settings().max_file_size
    every = python_files(corpus)
    files = [f for f in every if f.stat().st_size <= limit]
    lines = sum(f.read_bytes().count(b"\n") for f in files)
    print(f"\n== {name}: {corpus}")
    print(f"files {len(files)}, lines {lines}")
    for big in sorted(set(every) - set(files)):
        # nanlint skips these by default (max-file-size): the baseline leaves them out too
        print(f"left out of every measurement (over max-file-size {limit} bytes): {big.relative_to(corpus)}")
    print(f"not parsed (no trigger of any default rule): {skipped_files(files, 'default')}; "
          f"with ALL rules: {skipped_files(files, 'ALL')}")
    work = Path(tempfile.mkdtemp(prefix="nanlint-bench-"))
    cache_dir = work / "cache"
    common = [f"--jobs={jobs}", str(corpus)]
    results: Dict[str, float] = {}
    peaks: List[int] = []

    def timed(args: Sequence[str]) -> float:
        seconds, _, peak = run_nanlint(args, work)
        peaks.append(peak)
        return seconds

    # interleaved, run by run: on a shared machine the load drifts between
    # phases, and a ratio of two phases measured minutes apart moves with it
    rounds = [(parse_all(files, jobs), timed(["--no-cache", *common]),
               timed(["--no-cache", "--select", "ALL", *common])) for _ in range(runs)]
    results["parse"] = statistics.median(p for p, _, _ in rounds)
    results["cold"] = statistics.median(c for _, c, _ in rounds)
    results["cold_all"] = statistics.median(a for _, _, a in rounds)
    results["cold_per_parse"] = statistics.median(c / p for p, c, _ in rounds)
    results["cold_all_per_parse"] = statistics.median(a / p for p, _, a in rounds)
    (work / "pyproject.toml").write_text(f'[tool.nanlint]\ncache-dir = "{cache_dir}"\n')
    timed(["--config", str(work / "pyproject.toml"), *common])  # fill the cache
    results["warm"] = median_time(lambda: timed(["--config", str(work / "pyproject.toml"), *common]), runs)
    results["peak_mb"] = max(peaks)
    if with_torchfix:
        results["torchfix"] = torchfix_time(corpus, jobs)
    shutil.rmtree(work, ignore_errors=True)

    print(f"median of {runs} runs, {jobs} process(es):")
    print(f"  libcst parse only        {results['parse']:8.2f} s")
    print(f"  nanlint cold (default)   {results['cold']:8.2f} s")
    print(f"  nanlint cold (ALL)       {results['cold_all']:8.2f} s")
    print(f"  nanlint warm (cache)     {results['warm']:8.2f} s")
    if "torchfix" in results:
        print(f"  torchfix --select ALL    {results['torchfix']:8.2f} s (one run)")
    print(f"  peak RSS of any process  {results['peak_mb']:8d} MB")
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    cold_ratio = results["cold_per_parse"]
    warm_ratio = results["cold"] / results["warm"]
    print("ratios (cold / parse: the median of each run's own ratio):")
    print(f"  cold / parse             {cold_ratio:6.2f}  (target <= 1.3)  {ok(cold_ratio <= 1.3)}")
    print(f"  cold(ALL) / parse        {results['cold_all_per_parse']:6.2f}")
    print(f"  cold / warm              {warm_ratio:6.1f}  (target >= 10)   {ok(warm_ratio >= 10)}")
    if "torchfix" in results:
        tf_ratio = results["torchfix"] / results["cold_all"]
        print(f"  torchfix / nanlint(ALL)  {tf_ratio:6.1f}  (target >= 5)    {ok(tf_ratio >= 5)}")
    print(f"  peak RSS                 {results['peak_mb']:6d} MB (target < 400) {ok(results['peak_mb'] < 400)}")
    return results


def compile_nanlint() -> None:
    """Byte-compile nanlint and its rules, as installing a wheel does."""
    import compileall

    import nanlint

    folders = [Path(nanlint.__file__).parent]
    spec = importlib.util.find_spec("rules")  # a checkout's rules/ (a wheel has nanlint/rules)
    if spec is not None and spec.origin is not None:
        folders.append(Path(spec.origin).parent)
    for folder in folders:
        compileall.compile_dir(str(folder), quiet=1)
    print("nanlint byte-compiled first, as an installed package is")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="torch/optim only, one run")
    parser.add_argument("--torchfix", action="store_true", help="also time TorchFix")
    parser.add_argument("--corpus", action="append", help="directories to measure instead of the default corpora")
    args = parser.parse_args()

    if args.corpus:
        corpora = [(c, Path(c)) for c in args.corpus]
    elif args.quick:
        corpora = [("torch/optim", package_dir("torch") / "optim")]
        args.runs = 1
    else:
        corpora = [("torch", package_dir("torch")), ("transformers/models", package_dir("transformers") / "models")]
    compile_nanlint()
    for name, corpus in corpora:
        bench_corpus(name, corpus, args.jobs, args.runs, args.torchfix)


if __name__ == "__main__":
    main()
