"""Shared test helpers: lint a snippet, apply fixes, read fixture markers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from nanlint.dtypes import DTYPES
from nanlint.engine import lint_source
from nanlint.fix import apply_fixes
from nanlint.finding import Finding
from nanlint.registry import all_rules

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# `# expect: NL002` (a high-confidence finding) or `# expect: NL002 (low), NL103`
_MARKED = r"NL\d{3}(?:\s*\((?:high|medium|low)\))?"
MARKER_RE = re.compile(rf"#\s*expect:\s*(?P<codes>{_MARKED}(?:\s*,\s*{_MARKED})*)")


def lint(source: str, codes: Optional[Sequence[str]] = None, dtypes: Sequence[str] = ("float16",),
         options: Optional[dict] = None, path: str = "snippet.py") -> List[Finding]:
    rules = [r for r in all_rules() if codes is None or r.code in codes]
    facts = [DTYPES[d] for d in dtypes]
    rules = [r for r in rules if r.active(facts)]
    result = lint_source(source, path, rules, facts, options or {})
    assert not result.errors, result.errors
    return result.findings


def fix_all(source: str, codes: Sequence[str], rounds: int = 5, **kw) -> str:
    """Apply every fix (safe and unsafe) of the given rules to a fixed point."""
    for _ in range(rounds):
        fixes = [f.fix for f in lint(source, codes, **kw) if f.fix is not None]
        if not fixes:
            return source
        new = apply_fixes(source, fixes)
        if new == source:
            return source
        source = new
    return source


def markers(path: Path) -> Set[Tuple[int, str, str]]:
    """(line, code, confidence) of every `# expect:` marker; "high" unless the
    marker names another confidence."""
    out = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = MARKER_RE.search(line)
        if m:
            for code, confidence in re.findall(r"(NL\d{3})(?:\s*\((\w+)\))?", m.group("codes")):
                out.add((number, code, confidence or "high"))
    return out


def fixture_files() -> List[Path]:
    return sorted(p for p in FIXTURES.glob("NL*/*.py") if not p.name.endswith(".fixed.py"))
