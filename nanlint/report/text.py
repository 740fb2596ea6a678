"""ruff-like text: ``path:line:col: CODE [name] message`` and a summary."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..finding import HIGH, SAFE, Finding


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(findings: Sequence[Finding]) -> str:
    if not findings:
        return "All checks passed!\n"
    safe = sum(1 for f in findings if f.fix is not None and f.fix.applicability == SAFE)
    unsafe = sum(1 for f in findings if f.fix is not None and f.fix.applicability != SAFE)
    line = f"Found {_plural(len(findings), 'finding')}."
    if safe and unsafe:
        line += f" {safe} fixable with `nanlint fix`, {unsafe} more with `nanlint fix --unsafe-fixes`."
    elif safe:
        line += f" {safe} fixable with `nanlint fix`."
    elif unsafe:
        line += f" {unsafe} fixable with `nanlint fix --unsafe-fixes`."
    return line + "\n"


def render_lines(findings: Sequence[Finding]) -> str:
    return "".join(
        f"{f.location}: {f.code} [{f.name}] {f.message}{confidence_note(f)}\n" for f in findings
    )


def confidence_note(f: Finding) -> str:
    """`` (medium confidence)`` for a finding below high; nothing for high,
    the only level shown by default."""
    return "" if f.confidence == HIGH else f" ({f.confidence} confidence)"


def render(findings: Sequence[Finding]) -> str:
    return render_lines(findings) + summary(findings)


def render_statistics(findings: Sequence[Finding]) -> str:
    counts = Counter((f.code, f.name) for f in findings)
    fixable = Counter(f.code for f in findings if f.fix is not None)
    width = max((len(str(n)) for n in counts.values()), default=1)
    rows = []
    for (code, name), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        mark = "[*]" if fixable[code] else "[ ]"
        rows.append(f"{n:>{width}}\t{code}\t{mark} {name}")
    return "\n".join(rows) + ("\n" if rows else "") + summary(findings)
