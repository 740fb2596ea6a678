"""The public data model: findings, fixes and text edits.

Lines and columns are 1-based; ``end_line``/``end_column`` point just past the
last character (exclusive), like ruff's ``end_location``. The JSON output is
``Finding.to_dict()`` for each finding and is a stable public interface.

In a notebook, ``cell`` is the 1-based index of the cell in the notebook's
``cells`` array and lines count from the top of that cell; it is None in a
``.py`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

SAFE = "safe"
UNSAFE = "unsafe"
APPLICABILITIES = (SAFE, UNSAFE)

#: how sure a finding is, weakest first (see README, "Confidence")
LOW = "low"
MEDIUM = "medium"
HIGH = "high"
CONFIDENCES = (LOW, MEDIUM, HIGH)

#: the pseudo-rule the engine reports a file that does not parse with
SYNTAX_ERROR_CODE = "NL000"
SYNTAX_ERROR_NAME = "syntax-error"


def at_least(confidence: str, minimum: str) -> bool:
    return CONFIDENCES.index(confidence) >= CONFIDENCES.index(minimum)


@dataclass(frozen=True)
class Edit:
    """Replace the text between two positions with ``content`` (an insertion when empty)."""

    line: int
    column: int
    end_line: int
    end_column: int
    content: str

    def to_dict(self) -> Dict[str, Any]:
        return {
            "content": self.content,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
        }


@dataclass(frozen=True)
class Fix:
    applicability: str
    message: str
    edits: Tuple[Edit, ...]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "applicability": self.applicability,
            "message": self.message,
            # no edits: in a notebook, a fix that also changes another cell (an
            # added import), which cell-relative edits cannot express
            "edits": [e.to_dict() for e in self.edits] if self.edits else None,
        }


@dataclass(frozen=True)
class Finding:
    code: str
    name: str
    message: str
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    fix: Optional[Fix] = None
    cell: Optional[int] = None
    #: "high": fires for ordinary or plausible inputs in the target dtype;
    #: "medium": needs a rare input (an all-padding row, a zero vector);
    #: "low": rests on a fact the analysis could not establish
    confidence: str = HIGH

    def sort_key(self) -> Tuple[str, int, int, int, str, str]:
        return (self.path, self.cell or 0, self.line, self.column, self.code, self.message)

    @property
    def location(self) -> str:
        """``path:line:col``, or ``path:cell N:line:col`` in a notebook."""
        cell = f"cell {self.cell}:" if self.cell is not None else ""
        return f"{self.path}:{cell}{self.line}:{self.column}"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "fix": self.fix.to_dict() if self.fix is not None else None,
            "cell": self.cell,
            "confidence": self.confidence,
        }
