"""Check and fix real code nobody here wrote, in a temporary copy, and prove
nothing broke.

    python bench/fix_corpus.py            # installed torch + transformers
    python bench/fix_corpus.py DIR...     # other trees

For each tree: copies it, runs `nanlint check --select ALL` and
`nanlint fix --unsafe-fixes --select ALL` on the copy, then verifies that every
changed file still parses and compiles, that a second fix changes nothing, and
that no traceback was printed. Prints files, lines, findings per rule, files
fixed, fixes dropped, crashes and wall times.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def nanlint(*args: str, cwd: Path) -> Tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd,
                          capture_output=True, text=True)
    return proc, time.perf_counter() - start


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*.py"))}


def run_tree(name: str, tree: Path, jobs: int) -> bool:
    work = Path(tempfile.mkdtemp(prefix="nanlint-fixcorpus-"))
    copy = work / name.replace("/", "_")
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = snapshot(copy)
    lines = sum(b.count(b"\n") for b in before.values())
    print(f"\n== {name}: {len(before)} files, {lines} lines")

    # run from the parent: with the tree itself as the working directory, `python -m`
    # would import its modules (torch/random.py, torch/types.py) as the stdlib's
    target = copy.name
    check, t_check = nanlint("check", "--no-cache", "--select", "ALL", "--exit-zero",
                             "--output-format", "json", f"--jobs={jobs}", target, cwd=work)
    findings = json.loads(check.stdout or "[]")
    per_rule = collections.Counter(f["code"] for f in findings)
    print(f"check: {t_check:.1f} s, exit {check.returncode}, findings {len(findings)}: "
          + ", ".join(f"{c} {n}" for c, n in sorted(per_rule.items())))

    fix, t_fix = nanlint("fix", "--no-cache", "--select", "ALL", "--unsafe-fixes", "--exit-zero",
                         f"--jobs={jobs}", target, cwd=work)
    after = snapshot(copy)
    changed = [p for p in after if after[p] != before.get(p)]
    dropped = [l for l in fix.stderr.splitlines() if "fix dropped" in l]
    broken: List[str] = []
    for path in changed:
        try:
            compile(after[path], str(path), "exec", flags=ast.PyCF_ONLY_AST)
        except SyntaxError as exc:
            broken.append(f"{path}: {exc}")
    again, _ = nanlint("fix", "--no-cache", "--select", "ALL", "--unsafe-fixes", "--diff",
                       f"--jobs={jobs}", target, cwd=work)
    crashes = [s for s in (check.stderr, fix.stderr, again.stderr) if "Traceback" in s]
    for text in crashes[:1]:
        print(text[-1500:])
    print(f"fix: {t_fix:.1f} s, exit {fix.returncode}, files fixed {len(changed)}, "
          f"fixes dropped as unsafe to write {len(dropped)}")
    print(f"changed files that no longer parse: {len(broken)}")
    print(f"files a second fix would change: {again.stdout.count('+++ ')} (exit {again.returncode})")
    print(f"tracebacks: {len(crashes)}")
    for line in (broken + dropped)[:10]:
        print("  ", line)
    errors = [l for l in (check.stderr + fix.stderr).splitlines() if l.startswith("error:")]
    print(f"errors reported (unreadable/undecodable files): {len(errors)}")
    for line in errors[:5]:
        print("  ", line)
    shutil.rmtree(work, ignore_errors=True)
    return not broken and not crashes and again.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    trees = [(str(t), t) for t in args.trees] or [
        ("torch", package_dir("torch")), ("transformers", package_dir("transformers"))]
    ok = all([run_tree(name, tree, args.jobs) for name, tree in trees])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
