"""``# noqa`` comments and the source's physical lines: the text-only part of
suppression, kept apart from the engine so that a run answered from the cache
(which still warns about unknown codes in ``# noqa``) never imports libcst."""

from __future__ import annotations

import re
from typing import Iterable, List, Optional

from .finding import SYNTAX_ERROR_CODE, SYNTAX_ERROR_NAME

NEWLINE_RE = re.compile(r"\r\n?|\n")


def line_starts(source: str) -> List[int]:
    """The offset at which each line of ``source`` starts."""
    starts = [0]
    starts.extend(m.end() for m in NEWLINE_RE.finditer(source))
    return starts


#: a code (``NL002``, ``E501``) or a rule name (``unclamped-exp``: lowercase words joined by hyphens)
_NOQA_TOKEN = r"(?:[a-z][a-z0-9]*(?:-[a-z0-9]+)+|[A-Z]+[0-9]+)"
NOQA_RE = re.compile(
    rf"#\s*noqa(?::[\s]?(?P<codes>{_NOQA_TOKEN}(?:[,\s]+{_NOQA_TOKEN})*))?",
    re.IGNORECASE,
)
_TOKEN_RE = re.compile(_NOQA_TOKEN, re.IGNORECASE)


def _is_name(token: str) -> bool:
    return "-" in token


def noqa_codes(line_text: str) -> Optional[frozenset]:
    """None: no noqa; empty set: a bare noqa (everything); else the codes
    (upper case) and rule names (lower case) listed."""
    match = None
    for match in NOQA_RE.finditer(line_text):
        pass
    if match is None:
        return None
    codes = match.group("codes")
    if not codes:
        return frozenset()
    return frozenset(t.lower() if _is_name(t) else t.upper() for t in _TOKEN_RE.findall(codes))


_NOQA_WORD = re.compile("noqa", re.IGNORECASE)
_LINE_SPLIT_RE = re.compile(r"\r\n|\r|\n")
_LINE_KEEP_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def physical_lines(source: str, keepends: bool = False) -> List[str]:
    """The source's lines as Python counts them: only \\n, \\r\\n and \\r end a
    line (``str.splitlines`` also splits at form feeds, \\x1c-\\x1e, \\x85 and
    \\u2028, which would shift every later line number)."""
    if keepends:
        return _LINE_KEEP_RE.findall(source)
    return _LINE_SPLIT_RE.split(source)


def unknown_noqa_codes(source: str, path: str, rules: Iterable) -> List[str]:
    """Warnings for ``# noqa:`` comments naming an ``NL`` code or a rule name
    that is not a nanlint rule (codes of other tools, e.g. ``E501``, are left
    alone)."""
    if not _NOQA_WORD.search(source):  # no copy of the text for the common case
        return []
    rules = list(rules)
    known = {r.code for r in rules} | {r.name for r in rules} | {SYNTAX_ERROR_CODE, SYNTAX_ERROR_NAME}
    warnings: List[str] = []
    for number, line in enumerate(physical_lines(source), start=1):
        if "#" not in line:
            continue
        codes = noqa_codes(line)
        if not codes:
            continue
        for token in sorted(c for c in codes if (_is_name(c) or c.startswith("NL")) and c not in known):
            kind = "rule name" if _is_name(token) else "rule code"
            warnings.append(f"{path}:{number}: unknown {kind} `{token}` in `# noqa` (see `nanlint rule --all`)")
    return warnings


def is_suppressed(line_text: str, code: str, name: str) -> bool:
    codes = noqa_codes(line_text)
    if codes is None:
        return False
    return not codes or code in codes or name in codes
