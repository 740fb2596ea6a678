"""Applying the text edits that rules produce."""

from __future__ import annotations

import os
import re
import secrets
import stat
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from .finding import SAFE, SYNTAX_ERROR_CODE, Edit, Finding, Fix
from .noqa import line_starts


class OverlapError(ValueError):
    """Two edits touch the same text."""


Span = Tuple[int, int, str]  # (begin offset, end offset, content)


def _offsets(source: str, starts: Sequence[int], edit: Edit) -> Span:
    def offset(line: int, column: int) -> int:
        if line - 1 >= len(starts):
            return len(source)
        return min(starts[line - 1] + column - 1, len(source))

    return offset(edit.line, edit.column), offset(edit.end_line, edit.end_column), edit.content


def _splice(source: str, spans: Iterable[Span]) -> str:
    out: List[str] = []
    cursor = 0
    for begin, end, content in sorted(spans, key=lambda s: (s[0], s[1])):
        if begin < cursor:
            raise OverlapError(f"edits overlap at offset {begin}")
        out.append(source[cursor:begin])
        out.append(content)
        cursor = end
    out.append(source[cursor:])
    return "".join(out)


def apply_edits(source: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping edits to ``source`` (positions refer to ``source``)."""
    starts = line_starts(source)
    return _splice(source, (_offsets(source, starts, e) for e in edits))


#: characters of context that tell a copy of an edited site from the same
#: short text written anew (`-1e9` in `x.masked_fill(m, -1e9)`)
_COPY_CONTEXT = 3
#: a site's text at least this long is a copy wherever it appears
_COPY_MIN_LENGTH = 8


class _Round:
    """The edits taken for one round: disjoint, sorted, each checked against
    its neighbours only (a round of n fixes costs n log n, not n squared)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.spans: List[Span] = []
        self.keys: List[Tuple[int, int]] = []  # (begin, end) of each span, sorted
        self.longest = 0  # the longest content taken

    def _between(self, low: int, high: int) -> Iterator[Span]:
        """Taken spans that begin before ``high`` and end at or after ``low``."""
        index = bisect_left(self.keys, (high, -1))
        while index > 0:
            index -= 1
            span = self.spans[index]
            if span[1] < low:
                break  # the spans are disjoint: the ones before end earlier
            yield span

    def conflicts(self, span: Span) -> bool:
        begin, end, content = span
        for other in self._between(begin, end + 1):
            if other != span and other[0] < end and begin < other[1]:
                return True  # overlap (an insertion inside a replaced span included)
        # A fix whose new text copies a site that another edit of the round
        # changes (NL003's fix of `x.masked_fill(m, -1e9).masked_fill(m, -1e9)`
        # repeats the inner `-1e9`) would duplicate the unfixed site: it waits
        # for the next round, when it copies the fixed text.
        reach = max(len(content), self.longest)
        for other in self._between(begin - reach, end + reach):
            if other != span and (self._copies(content, other) or self._copies(other[2], span)):
                return True
        return False

    def _copies(self, content: str, site: Span) -> bool:
        begin, end, _ = site
        text = self.source[begin:end]
        if not content or not text.strip() or text not in content:
            return False
        if len(text) >= _COPY_MIN_LENGTH:
            return True
        before = self.source[max(0, begin - _COPY_CONTEXT):end]
        after = self.source[begin:end + _COPY_CONTEXT]
        return before in content or after in content

    def add(self, span: Span) -> None:
        index = bisect_right(self.keys, span[:2])
        self.keys.insert(index, span[:2])
        self.spans.insert(index, span)
        self.longest = max(self.longest, len(span[2]))


def _take(source: str, fixes: Sequence[Fix]) -> Tuple[List[Fix], List[Span]]:
    starts = line_starts(source)
    round_ = _Round(source)
    taken: List[Fix] = []
    seen: set = set()
    for fix in fixes:
        spans = [s for s in dict.fromkeys(_offsets(source, starts, e) for e in fix.edits) if s not in seen]
        if any(round_.conflicts(s) for s in spans) or _overlap_each_other(spans):
            continue
        for span in spans:
            round_.add(span)
            seen.add(span)
        taken.append(fix)
    return taken, round_.spans


def _overlap_each_other(spans: Sequence[Span]) -> bool:
    try:
        _splice("", [(b, e, "") for b, e, _ in spans])
    except OverlapError:
        return True
    return False


def take_fixes(source: str, fixes: Sequence[Fix]) -> List[Fix]:
    """The fixes, in order, that can be applied together: a fix that overlaps
    one already taken, or copies text that one changes, waits for the next
    round."""
    return _take(source, fixes)[0]


def apply_fixes(source: str, fixes: Sequence[Fix]) -> str:
    """Apply the fixes that can be applied together (see ``take_fixes``) in
    one pass; identical edits (the same import added by two fixes) are applied
    once."""
    return _splice(source, _take(source, fixes)[1])


# -- fixing a unit of source ------------------------------------------------------

MAX_ROUNDS = 10


@dataclass
class FixOutcome:
    text: str
    #: code -> number of fixes applied
    applied: Counter
    #: messages about fixes that were dropped because their result did not parse
    dropped: List[str]
    #: findings left in the fixed text
    remaining: List[Finding]
    errors: List[str]


Lint = Callable[[str], Tuple[List[Finding], List[str]]]


def _relint(text: str, before: Sequence[Finding], lint: Lint) -> Optional[Tuple[List[Finding], List[str]]]:
    """The findings of fixed ``text``, or None when it does not parse: Python
    must accept it, and libcst too when it accepted the text before (its
    parse is the lint's own, not a second one)."""
    import ast

    try:
        ast.parse(text)
    except Exception:  # any failure to parse means: do not write this
        return None
    findings, errors = lint(text)
    if any(f.code == SYNTAX_ERROR_CODE for f in findings) and not any(f.code == SYNTAX_ERROR_CODE for f in before):
        return None
    return findings, errors


def wanted(finding: Finding, unsafe: bool) -> bool:
    return finding.fix is not None and (unsafe or finding.fix.applicability == SAFE)


def fix_text(text: str, lint: Lint, unsafe: bool = False) -> FixOutcome:
    """Apply fixes to a fixed point: lint, apply every fix that overlaps no
    other (and copies no text another changes) in one pass, re-lint once,
    repeat; after MAX_ROUNDS rounds only while the number of fixable findings
    keeps falling (a chain of n nested sites takes n rounds, a fix that
    re-creates its finding cannot loop). A round whose result does not parse
    is retried fix by fix, and a fix that breaks the file is dropped and
    reported, never kept."""
    applied: Counter = Counter()
    dropped: List[str] = []
    banned: set = set()
    findings, errors = lint(text)
    rounds, previous = 0, 0
    while True:
        todo = [
            f for f in findings
            if wanted(f, unsafe) and (f.code, f.message, f.fix) not in banned
        ]
        if not todo or (rounds >= MAX_ROUNDS and len(todo) >= previous):
            break
        rounds, previous = rounds + 1, len(todo)
        accepted, spans = _take(text, [f.fix for f in todo])  # type: ignore[misc]
        ids = {id(fix) for fix in accepted}
        taken = [f for f in todo if id(f.fix) in ids]
        candidate = _splice(text, spans)
        relinted = _relint(candidate, findings, lint)
        if relinted is None:
            # find the culprits one by one; keep the first fix that is sound
            candidate, taken = text, []
            for finding in todo:
                attempt = apply_fixes(text, [finding.fix])  # type: ignore[list-item]
                relinted = _relint(attempt, findings, lint) if attempt != text else None
                if relinted is not None:
                    candidate, taken = attempt, [finding]
                    break
                banned.add((finding.code, finding.message, finding.fix))
                dropped.append(
                    f"{finding.path}:{finding.line}:{finding.column}: {finding.code}: "
                    "fix dropped, its result would not parse"
                )
        if candidate == text or relinted is None:
            break
        applied.update(f.code for f in taken)
        text = candidate
        findings, errors = relinted
    return FixOutcome(text, applied, dropped, findings, errors)


def unified_diff(path: str, old: str, new: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=path if os.path.isabs(path) else f"a/{path}",
        tofile=path if os.path.isabs(path) else f"b/{path}",
    )
    out = []
    for line in lines:
        out.append(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n")
    return "".join(out)


class WriteError(Exception):
    pass


TEMP_SUFFIX = ".nanlint-tmp"
#: ``.<file name>.<pid>.<16 hex>.nanlint-tmp``, next to the file being written
_TEMP = re.compile(r"\.(.+)\.(\d+)\.[0-9a-f]{16}" + re.escape(TEMP_SUFFIX) + r"\Z", re.DOTALL)


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def remove_stale_temps(target: Path) -> None:
    """Remove temp files that an earlier, killed ``fix`` left next to
    ``target``: only regular files of our name pattern for this very file,
    owned by this user, whose process is gone."""
    from .files import process_alive

    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or m.group(1) != target.name or process_alive(int(m.group(2))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(entry.path)
        except OSError:
            pass


def write_atomic(path: Path, data: bytes, expected_old: bytes, root: Optional[Path] = None) -> None:
    """Replace ``path``'s content with ``data`` atomically (a temp file in the
    same directory, then rename), keeping its permissions, owner and group,
    and refusing (WriteError, nothing written) when the file changed since it
    was read, is read-only, has other hard links (a rename would detach them),
    is a symlink to a file outside ``root`` (default: the working directory),
    or its owner cannot be kept. A symlink inside ``root`` is written through."""
    from .files import ReadError, read_bytes

    real = Path(os.path.realpath(path))
    if os.path.islink(path):
        project = os.path.realpath(root if root is not None else Path.cwd())
        if not _inside(str(real), project):
            raise WriteError(f"is a symlink to {real}, outside the project ({project}); left untouched")
    try:
        current = read_bytes(real)
    except ReadError as exc:
        raise WriteError(f"cannot re-read before writing: {exc}") from None
    if current != expected_old:
        raise WriteError("changed on disk while nanlint was fixing it; left untouched")
    if not os.access(real, os.W_OK):
        raise WriteError("is read-only; left untouched")
    old = real.stat()
    if old.st_nlink > 1:
        raise WriteError(f"has {old.st_nlink} hard links: replacing it would detach them, and writing "
                         "in place would change every linked copy; left untouched")
    remove_stale_temps(real)
    tmp = real.parent / f".{real.name}.{os.getpid()}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as exc:
        raise WriteError(f"cannot create a temporary file in {real.parent}: "
                         f"{exc.strerror or exc}; left untouched") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            new = os.fstat(handle.fileno())
            if (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
                try:
                    os.fchown(handle.fileno(), old.st_uid, old.st_gid)
                except PermissionError:
                    raise WriteError("belongs to another user or group, which a rewritten file "
                                     "would not keep; left untouched") from None
        os.chmod(tmp, stat.S_IMODE(old.st_mode))  # after chown, which clears set-id bits
        os.replace(tmp, real)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write: {exc.strerror or exc}; left untouched") from None
        raise
