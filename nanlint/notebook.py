"""Jupyter notebooks: lint the code cells, fix them without disturbing the JSON.

The code cells are joined into one *virtual* Python source, each preceded by a
separator comment, so that an ``import torch`` in the first cell resolves
``torch.log`` in the fifth, as the kernel would. IPython syntax is replaced by
placeholder comments (``pass`` statements inside indented blocks) that keep every
line where it was: line magics
(``%time``, ``x = %env``, and those automagic runs without the ``%``: ``pip install x``,
``ls data``), shell escapes (``!pip``, ``files = !ls``), help
(``obj?``) and whole cell magics (``%%bash``); the bodies of ``%%time``,
``%%timeit``, ``%%capture`` and ``%%prun`` are Python and are checked. A cell
whose first line is indented runs dedented in IPython: its separator line opens
an ``if True:`` block, so lines and columns stay where they were. A cell
that still does not parse is reported as NL000 in that cell and left out, and
the other cells are checked.

Findings are mapped back to (cell, line in cell); ``cell`` is the 1-based index
in the notebook's ``cells`` array, the position Jupyter shows it at.

A fix is applied to the virtual source; each cell whose text changed gets a
new ``source`` value spliced into the original JSON text at the exact span of
the old one, written in the old one's style (list of lines or one string,
same indentation), so outputs, metadata, key order and formatting elsewhere
stay byte-identical.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .files import ReadError
from .finding import Edit, Finding, Fix

# the bodies of these cell magics are Python
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})

_SEPARATOR = re.compile(r"^(?:if True:  )?# nanlint-cell (\d+) ([0-9a-f]+)$")
#: IPython's line magics and shell aliases, which its automagic runs without
#: the ``%`` (``pip install x``, ``ls data``, ``cd ..``); as in IPython, not
#: when an operator follows the name (``system += (``: Python)
_AUTOMAGIC = re.compile(
    r"(?:pip|conda|mamba|cd|ls|ll|cat|cp|mv|rm|rmdir|mkdir|pwd|env|set_env|load_ext|reload_ext|matplotlib"
    r"|pylab|time|timeit|run|history|who|whos|reset|less|more|man|clear|alias|config|autoreload|xmode"
    r"|pushd|popd|dirs|bookmark|store|load|save|sx|sc|system)[ \t]+(?![=(\[.,:)\]}!<>+*/%^&|]|(?:if|else|and|or|in|is|not"
    r"|for|as|from)\b)\S")
_PLACEHOLDER = re.compile(r"^([ \t]*)(?:pass  )?# nanlint-ipython ([0-9a-f]+) (\d+)$")
_ASSIGNED_MAGIC = re.compile(r"^[ \t]*[\w.,\[\]() \t]+=[ \t]*[!%]")
_BREAK = re.compile(r"\r\n|\r|\n")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


# -- locating the "source" of each cell in the raw JSON ---------------------------


class _Scanner:
    """Finds the character span of ``cells[i]["source"]`` in the JSON text."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.spans: Dict[int, Tuple[int, int]] = {}

    def ws(self, i: int) -> int:
        s = self.s
        while i < len(s) and s[i] in " \t\r\n":
            i += 1
        return i

    def value(self, i: int, path: Tuple) -> int:
        s = self.s
        i = self.ws(i)
        start = i
        if i >= len(s):
            raise ValueError("unexpected end")
        c = s[i]
        if c == "{":
            i = self.ws(i + 1)
            if s[i] == "}":
                end = i + 1
            else:
                while True:
                    m = _STRING.match(s, i)
                    if m is None:
                        raise ValueError("expected a key")
                    key = json.loads(m.group())
                    i = self.ws(m.end())
                    if s[i] != ":":
                        raise ValueError("expected ':'")
                    i = self.value(i + 1, path + (key,))
                    i = self.ws(i)
                    if s[i] == ",":
                        i = self.ws(i + 1)
                        continue
                    if s[i] == "}":
                        end = i + 1
                        break
                    raise ValueError("expected ',' or '}'")
        elif c == "[":
            i = self.ws(i + 1)
            if s[i] == "]":
                end = i + 1
            else:
                index = 0
                while True:
                    i = self.ws(self.value(i, path + (index,)))
                    index += 1
                    if s[i] == ",":
                        i += 1
                        continue
                    if s[i] == "]":
                        end = i + 1
                        break
                    raise ValueError("expected ',' or ']'")
        elif c == '"':
            m = _STRING.match(s, i)
            if m is None:
                raise ValueError("unterminated string")
            end = m.end()
        else:
            m = _SCALAR.match(s, i)
            if m is None:
                raise ValueError("unexpected character")
            end = m.end()
        if len(path) == 3 and path[0] == "cells" and path[2] == "source":
            self.spans[path[1]] = (start, end)
        return end


# -- the notebook model ---------------------------------------------------------------


@dataclass
class Cell:
    index: int  # 1-based position in `cells`
    text: str  # the cell's source as the user wrote it
    virtual: str  # what the rules see (IPython syntax replaced), ends with "\n"
    span: Tuple[int, int]  # of its "source" value in the raw JSON
    ipython: Dict[int, str] = field(default_factory=dict)  # placeholder number -> original line
    error: Optional[Finding] = None  # NL000 when the cell does not parse

    @property
    def indented(self) -> bool:
        """The cell's first line is indented: IPython removes that
        indentation from every line that has it (a block pasted out of a
        function); the virtual source keeps the lines as they are and opens
        the cell with ``if True:`` instead."""
        return bool(_leading_indent(self.virtual))


@dataclass
class Notebook:
    raw: str
    cells: List[Cell]
    token: str
    path: str

    def virtual_source(self) -> str:
        parts = []
        for cell in self.cells:
            opener = "if True:  " if cell.indented and cell.error is None else ""
            parts.append(f"{opener}# nanlint-cell {cell.index} {self.token}\n")
            if cell.error is None:
                parts.append(cell.virtual)
            else:  # keep the line count; check nothing in it
                parts.append("\n" * cell.virtual.count("\n"))
        return "".join(parts)


def _is_ipython(stripped: str) -> bool:
    if stripped.startswith(("%", "!", "?")) or stripped.endswith("?"):
        return True
    if not _AUTOMAGIC.match(stripped):
        return False
    try:  # `time x` as a magic; `ls - la` is Python and stays
        compile(stripped, "<cell>", "exec")
    except SyntaxError:
        return True
    return False


def _leading_indent(text: str) -> str:
    """The indentation of a text's first non-blank line."""
    first = next((l for l in _BREAK.split(text) if l.strip()), "")
    return first[: len(first) - len(first.lstrip())]


def _dedented(virtual: str) -> str:
    """A cell's text as IPython runs it: when its first non-blank line is
    indented, that indentation removed from every line that starts with it."""
    prefix = _leading_indent(virtual)
    if not prefix:
        return virtual
    return "\n".join(l[len(prefix):] if l.startswith(prefix) else l for l in virtual.split("\n"))


def _virtualise(text: str, token: str) -> Tuple[str, Dict[int, str]]:
    lines = _BREAK.split(text)  # "\r" and "\r\n" end a line too, for Python as for Jupyter
    if lines and lines[-1] == "":
        lines.pop()
    out: List[str] = []
    originals: Dict[int, str] = {}

    def placeholder(indent: str, original: str) -> str:
        n = len(originals)
        originals[n] = original
        if not indent:
            # a comment, not a statement: fixes never anchor an insertion (an
            # added import) to it, so nothing lands in a `%%bash` cell
            return f"# nanlint-ipython {token} {n}"
        return f"{indent}pass  # nanlint-ipython {token} {n}"  # keeps an indented block non-empty

    first = next((l.strip() for l in lines if l.strip()), "")
    whole_cell = first.startswith("%%")
    body_is_python = whole_cell and first[2:].split()[0:1] and first[2:].split()[0] in PYTHON_CELL_MAGICS
    seen_first = False
    continued = False
    for line in lines:
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if whole_cell and not seen_first and stripped:
            seen_first = True
            out.append(placeholder("", line))
            continue
        if whole_cell and not body_is_python:
            out.append(placeholder("", line))
            continue
        if continued or (stripped and (_is_ipython(stripped) or _ASSIGNED_MAGIC.match(line))):
            out.append(placeholder(indent if not continued else "", line))
            continued = line.endswith("\\")
            continue
        out.append(line)
    return "".join(l + "\n" for l in out), originals


def load(raw: str, path: str) -> Notebook:
    """Parse a notebook's JSON text; ReadError when it is not a notebook."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ReadError(f"not a valid notebook: invalid JSON ({exc})") from None
    except RecursionError:
        raise ReadError("not a valid notebook: its JSON is nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ReadError("not a valid notebook: no `cells` list")
    scanner = _Scanner(raw)
    try:
        scanner.value(0, ())
    except (ValueError, IndexError) as exc:  # json.loads accepted it, so this is a bug; fail safe
        raise ReadError(f"cannot locate the cells in the notebook JSON ({exc})") from None
    except RecursionError:
        raise ReadError("not a valid notebook: its JSON is nested too deeply") from None
    token = secrets.token_hex(4)
    cells: List[Cell] = []
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            if not all(isinstance(s, str) for s in source):
                raise ReadError(f"not a valid notebook: cell {i + 1} has a non-text source")
            text = "".join(source)
        elif isinstance(source, str):
            text = source
        else:
            raise ReadError(f"not a valid notebook: cell {i + 1} has a non-text source")
        if i not in scanner.spans:
            continue  # a code cell without "source": nothing to check
        virtual, originals = _virtualise(text, token)
        cells.append(Cell(i + 1, text, virtual, scanner.spans[i], originals))
    nb = Notebook(raw, cells, token, path)
    _check_cells(nb)
    return nb


def _check_cells(nb: Notebook) -> None:
    from .engine import syntax_error_finding, _python_syntax_error

    for cell in nb.cells:
        checked = _dedented(cell.virtual)
        problem = _python_syntax_error(checked)
        if problem is not None:
            f = syntax_error_finding(nb.path, SyntaxError(problem[0]), checked)
            cell.error = Finding(f.code, f.name, f.message, f.path, f.line, f.column, f.end_line,
                                 f.end_column, None, cell.index)


# -- mapping findings back to cells ---------------------------------------------------------


def _layout(virtual: str, token: str) -> List[Tuple[int, int]]:
    """(first virtual line of the cell's body, cell index) for each separator."""
    out = []
    for number, line in enumerate(virtual.split("\n"), start=1):
        m = _SEPARATOR.match(line)
        if m and m.group(2) == token:
            out.append((number + 1, int(m.group(1))))
    return out


def _locate(layout: List[Tuple[int, int]], line: int) -> Tuple[int, int]:
    cell, first = layout[0][1], layout[0][0]
    for start, index in layout:
        if start > line:
            break
        cell, first = index, start
    return cell, line - first + 1


def map_findings(nb: Notebook, virtual: str, findings: Sequence[Finding]) -> List[Finding]:
    """Virtual-source findings -> cell findings (plus each broken cell's NL000)."""
    layout = _layout(virtual, nb.token)
    out: List[Finding] = [c.error for c in nb.cells if c.error is not None]
    if not layout:
        return out
    for f in findings:
        cell, line = _locate(layout, f.line)
        end_cell, end_line = _locate(layout, f.end_line)
        if end_cell != cell:
            end_line = line
        fix = f.fix
        if fix is not None:
            edits = []
            for e in fix.edits:
                c1, l1 = _locate(layout, e.line)
                c2, l2 = _locate(layout, e.end_line)
                if c1 != cell or c2 != cell:
                    edits = None  # an edit in another cell (an added import): `nanlint fix` applies it
                    break
                edits.append(Edit(l1, e.column, l2, e.end_column, e.content))
            fix = Fix(fix.applicability, fix.message, tuple(edits) if edits is not None else ())
        out.append(dataclasses.replace(f, line=line, end_line=end_line, fix=fix, cell=cell))
    return out


# -- writing fixed cells back ---------------------------------------------------------------


def split_cells(nb: Notebook, virtual: str) -> Dict[int, str]:
    """The virtual text of each cell, from a (fixed) virtual source."""
    lines = virtual.split("\n")
    out: Dict[int, List[str]] = {}
    current: Optional[int] = None
    prefix: List[str] = []
    for line in lines:
        m = _SEPARATOR.match(line)
        if m and m.group(2) == nb.token:
            current = int(m.group(1))
            out[current] = []
            continue
        (out[current] if current is not None else prefix).append(line)
    if prefix and any(l.strip() for l in prefix) and nb.cells:  # text inserted above the first cell
        first = nb.cells[0]
        if first.indented and first.error is None:  # IPython dedents by the first line's indentation
            indent = _leading_indent(first.virtual)
            prefix = [indent + l if l.strip() else l for l in prefix]
        out[first.index] = prefix + out.get(first.index, [])
    return {k: "\n".join(v) for k, v in out.items()}


def _restore(cell: Cell, virtual: str, token: str) -> str:
    """A fixed cell's virtual text with its IPython lines put back, ending the
    way the original cell ended, and with the original cell's line breaks
    ("\n", "\r\n" or "\r"): an unchanged line keeps its own, a new or changed
    line gets the cell's most common one."""
    lines = virtual.split("\n")
    out = []
    for line in lines:
        m = _PLACEHOLDER.match(line)
        if m and m.group(2) == token and int(m.group(3)) in cell.ipython:
            out.append(cell.ipython[int(m.group(3))])
        else:
            out.append(line)
    new = "\n".join(out).rstrip("\n").split("\n")
    body = cell.text.rstrip("\r\n")
    tail = cell.text[len(body):]
    old, old_breaks = _BREAK.split(body), _BREAK.findall(body)
    counts = Counter(old_breaks + _BREAK.findall(tail))
    breaks = [counts.most_common(1)[0][0] if counts else "\n"] * (len(new) - 1)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, _ in matcher.get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                if i1 + k < len(old_breaks) and j1 + k < len(breaks):
                    breaks[j1 + k] = old_breaks[i1 + k]
    return "".join(line + end for line, end in zip(new, breaks + [""])) + tail


def _source_lines(text: str) -> List[str]:
    """Split like nbformat: at "\n" only, each line keeping its "\n"."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _encode_source(raw: str, span: Tuple[int, int], text: str) -> str:
    """The new "source" value, written in the style of the old one."""
    old = raw[span[0]:span[1]]
    ensure_ascii = raw.isascii() and "\\u" in raw
    if old.startswith('"'):
        return json.dumps(text, ensure_ascii=ensure_ascii)
    lines = [json.dumps(l, ensure_ascii=ensure_ascii) for l in _source_lines(text)]
    if not lines:
        return "[]"
    inner = old[1:-1]
    if inner.strip():
        lead = inner[: len(inner) - len(inner.lstrip())]
        trail = inner[len(inner.rstrip()):]
        first = _STRING.match(inner, len(lead))
        rest = inner[first.end():] if first is not None else ""
        if rest.startswith(","):  # the whitespace between two elements, as written
            sep = "," + rest[1: len(rest) - len(rest[1:].lstrip())]
        else:
            sep = "," + lead
    else:  # was empty: nbformat's layout
        lead, trail, sep = "\n", "\n", ",\n"
    return "[" + lead + sep.join(lines) + trail + "]"


def rebuild(nb: Notebook, fixed_virtual: str) -> Tuple[str, List[Tuple[int, str, str]]]:
    """(new raw JSON, [(cell, old text, new text)] for the cells that changed)."""
    pieces = split_cells(nb, fixed_virtual)
    changes: List[Tuple[Cell, str]] = []
    for cell in nb.cells:
        if cell.error is not None or cell.index not in pieces:
            continue
        old_virtual = cell.virtual[:-1] if cell.virtual.endswith("\n") else cell.virtual
        new_virtual = pieces[cell.index]
        if new_virtual.rstrip("\n") == old_virtual.rstrip("\n"):
            continue
        changes.append((cell, _restore(cell, new_virtual, nb.token)))
    raw = nb.raw
    for cell, new_text in sorted(changes, key=lambda c: c[0].span[0], reverse=True):
        start, end = cell.span
        raw = raw[:start] + _encode_source(raw, cell.span, new_text) + raw[end:]
    if changes:
        _verify(nb, raw, {c.index: t for c, t in changes})
    return raw, [(c.index, c.text, t) for c, t in changes]


def _verify(nb: Notebook, new_raw: str, new_texts: Dict[int, str]) -> None:
    """The rewritten JSON must be the old notebook with exactly those cells'
    sources replaced; anything else is a bug, and nothing is written."""
    old, new = json.loads(nb.raw), json.loads(new_raw)
    for index, text in new_texts.items():
        source = new["cells"][index - 1]["source"]
        if ("".join(source) if isinstance(source, list) else source) != text:
            raise ReadError(f"cell {index}: the rewritten source does not read back; left untouched")
        new["cells"][index - 1]["source"] = old["cells"][index - 1]["source"]
    if new != old:
        raise ReadError("rewriting the notebook would change more than its cells' sources; left untouched")
