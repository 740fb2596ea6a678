"""JUnit XML, for CI systems that show test reports (GitLab, Jenkins, Azure).

One ``testsuite`` per file with findings, one failing ``testcase`` per
finding; a clean run is one passing ``testcase``. Characters XML 1.0 cannot
hold (control characters in a file name) are written as escape sequences.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import groupby
from typing import Sequence

from ..finding import Finding
from .text import escape


def render(findings: Sequence[Finding]) -> str:
    root = ET.Element("testsuites", name="nanlint", tests=str(max(1, len(findings))),
                      failures=str(len(findings)), errors="0")
    if not findings:
        suite = ET.SubElement(root, "testsuite", name="nanlint", tests="1", failures="0", errors="0")
        ET.SubElement(suite, "testcase", name="nanlint", classname="nanlint")
    for raw_path, group in groupby(findings, key=lambda f: f.path):
        path = escape(raw_path)
        items = list(group)
        suite = ET.SubElement(root, "testsuite", name=path, tests=str(len(items)),
                              failures=str(len(items)), errors="0")
        for f in items:
            where = f"cell {f.cell}:{f.line}:{f.column}" if f.cell is not None else f"{f.line}:{f.column}"
            message = escape(f.message)
            case = ET.SubElement(suite, "testcase", name=f"{f.code} {f.name} at {where}", classname=path,
                                 file=path, line=str(f.line))
            failure = ET.SubElement(case, "failure", message=message, type=f.code)
            failure.text = f"{path}:{where}: {f.code} [{f.name}] {message}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
