"""Output formats. Each reporter turns findings into text; none computes findings."""

from __future__ import annotations

from typing import Callable, Dict, Sequence

from ..finding import Finding
from . import github as github_report
from . import json as json_report
from . import junit as junit_report
from . import sarif as sarif_report
from . import text as text_report

Reporter = Callable[[Sequence[Finding]], str]

FORMATS: Dict[str, Reporter] = {
    "text": text_report.render,
    "json": json_report.render,
    "github": github_report.render,
    "sarif": sarif_report.render,
    "junit": junit_report.render,
}

#: ``--statistics``: one count per rule, in the formats that have a shape for it
STATISTICS: Dict[str, Reporter] = {
    "text": text_report.render_statistics,
    "json": json_report.render_statistics,
}
