"""JSON: an array of finding objects. The schema is a public interface:
code, name, message, path, line, column, end_line, end_column, fix, cell.
With ``--statistics``: an array of {code, name, count, fixable}, most frequent first."""

from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

from ..finding import Finding


def render(findings: Sequence[Finding]) -> str:
    return json.dumps([f.to_dict() for f in findings], indent=2, ensure_ascii=False) + "\n"


def render_statistics(findings: Sequence[Finding]) -> str:
    counts = Counter((f.code, f.name) for f in findings)
    fixable = Counter(f.code for f in findings if f.fix is not None)
    rows = [{"code": code, "name": name, "count": n, "fixable": fixable[code]}
            for (code, name), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
