"""ruff-like text: ``path:line:col: CODE [name] message`` and a summary.

One finding is one line, whatever a file is called: a path holding a control
character (a newline could forge a finding line), a line separator or bytes
that are not UTF-8 is printed quoted, as git does (``"a\\nb.py":1:1: ...``),
and such characters in a message are escaped.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Sequence

from ..finding import HIGH, SAFE, Finding


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(findings: Sequence[Finding]) -> str:
    if not findings:
        return "All checks passed!\n"
    safe = sum(1 for f in findings if f.fix is not None and f.fix.applicability == SAFE)
    unsafe = sum(1 for f in findings if f.fix is not None and f.fix.applicability != SAFE)
    line = f"Found {_plural(len(findings), 'finding')}."
    if safe and unsafe:
        line += f" {safe} fixable with `nanlint fix`, {unsafe} more with `nanlint fix --unsafe-fixes`."
    elif safe:
        line += f" {safe} fixable with `nanlint fix`."
    elif unsafe:
        line += f" {unsafe} fixable with `nanlint fix --unsafe-fixes`."
    return line + "\n"


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _unsafe(c: str) -> bool:
    """Control characters, line/paragraph separators, lone surrogates (bytes of a
    name that is not UTF-8) and the two non-characters XML 1.0 forbids."""
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in "\ufffe\uffff"


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode spells it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every unsafe character spelled as an escape sequence."""
    if not any(_unsafe(c) for c in text):
        return text
    return "".join(_escape_char(c) if _unsafe(c) else c for c in text)


def quote_path(path: str) -> str:
    """``path`` as is, or quoted with escapes when it holds an unsafe character."""
    if not any(_unsafe(c) for c in path):
        return path
    return '"' + "".join(_escape_char(c) if _unsafe(c) else "\\" + c if c in '"\\' else c
                         for c in path) + '"'


def render_lines(findings: Sequence[Finding]) -> str:
    return "".join(
        # the location with its path quoted when it must be
        f"{quote_path(f.path)}{f.location[len(f.path):]}: {f.code} [{f.name}] {escape(f.message)}"
        f"{confidence_note(f)}\n"
        for f in findings
    )


def confidence_note(f: Finding) -> str:
    """`` (medium confidence)`` for a finding below high; nothing for high,
    the only level shown by default."""
    return "" if f.confidence == HIGH else f" ({f.confidence} confidence)"


def render(findings: Sequence[Finding]) -> str:
    return render_lines(findings) + summary(findings)


def render_statistics(findings: Sequence[Finding]) -> str:
    counts = Counter((f.code, f.name) for f in findings)
    fixable = Counter(f.code for f in findings if f.fix is not None)
    width = max((len(str(n)) for n in counts.values()), default=1)
    rows = []
    for (code, name), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        mark = "[*]" if fixable[code] else "[ ]"
        rows.append(f"{n:>{width}}\t{code}\t{mark} {name}")
    return "\n".join(rows) + ("\n" if rows else "") + summary(findings)
