"""JSON: an array of finding objects. The schema is a public interface:
code, name, message, path, line, column, end_line, end_column, fix."""

from __future__ import annotations

import json
from typing import Sequence

from ..finding import Finding


def render(findings: Sequence[Finding]) -> str:
    return json.dumps([f.to_dict() for f in findings], indent=2, ensure_ascii=False) + "\n"
