"""SARIF 2.1.0, the format GitHub code scanning (and most CI dashboards) read.

One run; ``tool.driver.rules`` holds every rule's metadata (summary, full
documentation as help text, default on/off); each finding is a result with its
location and, when the rule has one, its fix as text replacements. A notebook
finding names its cell, line and column in its text and properties and points
at the notebook file without a region (cell lines are not lines of the JSON
file), and carries no replacements (`nanlint fix` applies them). Columns
count Unicode code points, as nanlint's do (declared in ``columnKind``).
"""

from __future__ import annotations

import json
import os
from pathlib import PurePath
from typing import Any, Dict, List, Sequence
from urllib.parse import quote

from .. import __version__
from ..finding import HIGH, LOW, MEDIUM, Finding

#: SARIF result level for each confidence
LEVELS = {HIGH: "error", MEDIUM: "warning", LOW: "note"}

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SYNTAX_ERROR = ("NL000", "syntax-error", "the file does not parse, so no other rule could check it")


def _artifact(path: str) -> Dict[str, str]:
    """Relative paths (the usual case: nanlint prints paths relative to the
    working directory) are relative to %SRCROOT%, the directory it ran in."""
    p = PurePath(path)
    if p.is_absolute():
        return {"uri": p.as_uri()}
    # the name's own bytes, percent-encoded (a name that is not UTF-8 included)
    return {"uri": quote(p.as_posix().encode("utf-8", "surrogateescape")), "uriBaseId": "%SRCROOT%"}


def _region(line: int, column: int, end_line: int, end_column: int) -> Dict[str, int]:
    return {"startLine": line, "startColumn": column, "endLine": end_line, "endColumn": end_column}


def _rules() -> List[Dict[str, Any]]:
    from ..registry import all_rules

    code, name, summary = SYNTAX_ERROR
    rules = [{
        "id": code, "name": name,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": summary},
        "help": {"text": summary, "markdown": summary},
        "defaultConfiguration": {"level": "error", "enabled": True},
        "properties": {"fix": None},
    }]
    for rule in all_rules():
        doc = rule.documentation()
        rules.append({
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.summary},
            "help": {"text": doc, "markdown": doc},
            "defaultConfiguration": {"level": "error", "enabled": bool(rule.default_enabled)},
            "properties": {"fix": rule.fix_applicability},
        })
    return rules


def _result(f: Finding, index: Dict[str, int]) -> Dict[str, Any]:
    text = f.message if f.cell is None else f"cell {f.cell}:{f.line}:{f.column}: {f.message}"
    physical: Dict[str, Any] = {"artifactLocation": _artifact(f.path)}
    if f.cell is None:
        # a notebook's cell lines are not lines of the .ipynb file: such a
        # result points at the file, and names the cell in its text and properties
        physical["region"] = _region(f.line, f.column, f.end_line, f.end_column)
    location: Dict[str, Any] = {"physicalLocation": physical}
    result: Dict[str, Any] = {
        "ruleId": f.code,
        "level": LEVELS[f.confidence],
        "message": {"text": text},
        "locations": [location],
    }
    if f.code in index:
        result["ruleIndex"] = index[f.code]
    result["properties"] = {"confidence": f.confidence}
    if f.cell is not None:
        result["properties"].update({"cell": f.cell, "line": f.line, "column": f.column,
                                     "endLine": f.end_line, "endColumn": f.end_column})
    if f.fix is not None and f.fix.edits and f.cell is None:
        result["fixes"] = [{
            "description": {"text": f"{f.fix.message} ({f.fix.applicability})"},
            "artifactChanges": [{
                "artifactLocation": _artifact(f.path),
                "replacements": [
                    {"deletedRegion": _region(e.line, e.column, e.end_line, e.end_column),
                     "insertedContent": {"text": e.content}}
                    for e in f.fix.edits
                ],
            }],
        }]
    return result


def render(findings: Sequence[Finding]) -> str:
    rules = _rules()
    index = {r["id"]: i for i, r in enumerate(rules)}
    log = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "nanlint",
                "version": __version__,
                "semanticVersion": __version__,
                "informationUri": "https://pypi.org/project/nanlint/",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "originalUriBaseIds": {"%SRCROOT%": {"uri": PurePath(os.getcwd()).as_uri() + "/"}},
            "results": [_result(f, index) for f in findings],
        }],
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"
