"""Applying the text edits that rules produce."""

from __future__ import annotations

from typing import Iterable, List, Sequence

from .finding import Edit, Fix
from .positions import line_starts


class OverlapError(ValueError):
    """Two edits touch the same text."""


def apply_edits(source: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping edits to ``source`` (positions refer to ``source``)."""
    starts = line_starts(source)

    def offset(line: int, column: int) -> int:
        if line - 1 >= len(starts):
            return len(source)
        return min(starts[line - 1] + column - 1, len(source))

    spans = sorted(
        ((offset(e.line, e.column), offset(e.end_line, e.end_column), e.content) for e in edits),
        key=lambda s: (s[0], s[1]),
    )
    out: List[str] = []
    cursor = 0
    for begin, end, content in spans:
        if begin < cursor:
            raise OverlapError(f"edits overlap at offset {begin}")
        out.append(source[cursor:begin])
        out.append(content)
        cursor = end
    out.append(source[cursor:])
    return "".join(out)


def apply_fixes(source: str, fixes: Sequence[Fix]) -> str:
    """Apply whole fixes in order, skipping any that overlaps one already taken
    (the caller re-lints and repeats to reach a fixed point)."""
    taken: List[Edit] = []
    for fix in fixes:
        candidate = taken + [e for e in fix.edits if e not in taken]
        try:
            apply_edits(source, candidate)
        except OverlapError:
            continue
        taken = candidate
    return apply_edits(source, taken)
