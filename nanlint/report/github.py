"""GitHub Actions workflow commands: one ``::error`` annotation per finding.

GitHub shows each annotation on the pull request's diff at ``file``/``line``.
A notebook finding is annotated on the notebook file as a whole (its lines are
cell lines, not lines of the ``.ipynb`` JSON) and names the cell in its text.
"""

from __future__ import annotations

from typing import Sequence

from ..finding import HIGH, LOW, MEDIUM, Finding

#: the annotation level for each confidence
LEVELS = {HIGH: "error", MEDIUM: "warning", LOW: "notice"}


def _data(text: str) -> str:
    """Escape a message (the part after ``::``) as the runner expects."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    """Escape a property value (``file=...``): also ``:`` and ``,``."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render(findings: Sequence[Finding]) -> str:
    out = []
    for f in findings:
        sure = "" if f.confidence == HIGH else f", {f.confidence} confidence"
        props = [f"title={_prop(f'nanlint {f.code} ({f.name}{sure})')}", f"file={_prop(f.path)}"]
        message = f.message
        if f.cell is None:
            props += [f"line={f.line}", f"col={f.column}", f"endLine={f.end_line}",
                      f"endColumn={f.end_column}"]
        else:
            message = f"cell {f.cell}:{f.line}:{f.column}: {message}"
        out.append(f"::{LEVELS[f.confidence]} {','.join(props)}::{_data(f'{f.code} {message}')}\n")
    return "".join(out)
