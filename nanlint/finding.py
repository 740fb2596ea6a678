"""The public data model: findings, fixes and text edits.

Lines and columns are 1-based; ``end_line``/``end_column`` point just past the
last character (exclusive), like ruff's ``end_location``. The JSON output is
``Finding.to_dict()`` for each finding and is a stable public interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

SAFE = "safe"
UNSAFE = "unsafe"
APPLICABILITIES = (SAFE, UNSAFE)


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
            "edits": [e.to_dict() for e in self.edits],
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

    def sort_key(self) -> Tuple[str, int, int, str, str]:
        return (self.path, self.line, self.column, self.code, self.message)

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
        }
