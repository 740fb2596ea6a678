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
# `# expect: NL104` (shown by default) or `# expect: NL104 (medium)` (reported at that confidence)
_CODE = r"NL\d{3}(?:\s*\((?:high|medium|low)\))?"
MARKER_RE = re.compile(rf"#\s*expect:\s*(?P<codes>{_CODE}(?:\s*,\s*{_CODE})*)")


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


def markers(path: Path, confidence: Optional[str] = "high") -> Set[Tuple[int, str]]:
    """(line, code) of the markers expecting that confidence (a bare marker
    means "high"); every marker when ``confidence`` is None."""
    return {(n, code) for (n, code), level in confidence_markers(path).items() if confidence in (None, level)}


def confidence_markers(path: Path) -> Dict[Tuple[int, str], str]:
    """(line, code) -> the confidence a marker expects."""
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = MARKER_RE.search(line)
        if m:
            for code, level in re.findall(r"(NL\d{3})(?:\s*\((\w+)\))?", m.group("codes")):
                out[(number, code)] = level or "high"
    return out


def fixture_files() -> List[Path]:
    return sorted(p for p in FIXTURES.glob("NL*/*.py") if not p.name.endswith(".fixed.py"))
