"""How `fix` and `check` scale with the number of sites and with nesting.

    python bench/scaling.py            # everything
    python bench/scaling.py --fix      # only the fix scaling
    python bench/scaling.py --nesting  # only nesting depths and chain lengths

1. `fix` is linear: files of 100 to 5,000 `torch.exp` sites are fixed in
   process; the time per fixed site is printed with its ratio to the 100-site
   file (flat: about 1), next to `check`'s time per site.
2. Nesting: generated nesting depths and chain lengths are checked by the CLI,
   one process each; wall time and peak memory are printed with their ratio
   to the smallest input. Below the limits time grows with the parser's own
   cost per statement; above them the file is refused before libcst parses it,
   so time and memory stay at the refusal's cost.

Figures are measured in one run and printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nanlint.dtypes import DTYPES
from nanlint.engine import lint_source
from nanlint.fix import fix_text
from nanlint.registry import all_rules

SITES = (100, 500, 1000, 2000, 5000)
NESTING = {
    "brackets": lambda n: "y = torch.exp(" + "[" * n + "a" + "]" * n + ")",
    "method chain": lambda n: "y = torch.exp(x)" + ".a()" * n,
    "+ chain": lambda n: "y = torch.exp(x) + " + " + ".join(["a"] * n),
    "masked_fill chain": lambda n: "y = x" + ".masked_fill(m, -1e9)" * n,
}
LEVELS = (50, 100, 200, 400, 800, 1600, 4000)


def _sites(n: int) -> str:
    return "import torch\n\n" + "".join(f"def f{i}(x):\n    return torch.exp(x) * {i}\n\n" for i in range(n))


def bench_fix() -> None:
    facts = [DTYPES["float16"]]
    rules = [r for r in all_rules() if r.active(facts)]

    def lint(text: str):
        result = lint_source(text, "bench.py", rules, facts)
        return result.findings, result.errors

    print("fix: time per fixed site (ratio to 100 sites; flat = linear)")
    print(f"{'sites':>6} {'check s':>8} {'fix s':>8} {'fix us/site':>12} {'ratio':>6} {'fix/check':>9}")
    base = None
    for n in SITES:
        text = _sites(n)
        start = time.perf_counter()
        lint(text)
        check = time.perf_counter() - start
        start = time.perf_counter()
        outcome = fix_text(text, lint, unsafe=True)
        fix = time.perf_counter() - start
        fixed = sum(outcome.applied.values())
        assert fixed == n, (fixed, n)
        per_site = fix / fixed
        base = base or per_site
        print(f"{n:>6} {check:>8.2f} {fix:>8.2f} {per_site * 1e6:>12.0f} {per_site / base:>6.2f} {fix / check:>9.2f}")


def _run(path: Path):
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nanlint", "check", "--no-cache", path.name],
                            cwd=path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    outcome = "refused" if "too deeply nested" in err else ("crash" if code < 0 else "checked")
    return elapsed, usage.ru_maxrss / 1024, outcome


def bench_nesting() -> None:
    print("\ncheck of one generated statement: wall s, peak MB (ratio to the smallest level)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deep.py"
        for kind, make in NESTING.items():
            print(f"{kind}:")
            base = None
            for n in LEVELS:
                path.write_text("import torch\n" + make(n) + "\n")
                elapsed, peak, outcome = _run(path)
                base = base or (elapsed, peak)
                print(f"  {n:>6} {elapsed:>7.2f} s ({elapsed / base[0]:>5.2f}) {peak:>7.0f} MB "
                      f"({peak / base[1]:>4.2f})  {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true")
    parser.add_argument("--nesting", action="store_true")
    args = parser.parse_args()
    everything = not (args.fix or args.nesting)
    if args.fix or everything:
        bench_fix()
    if args.nesting or everything:
        bench_nesting()


if __name__ == "__main__":
    main()
