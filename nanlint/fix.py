"""Applying the text edits that rules produce."""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from .finding import SAFE, Edit, Finding, Fix
from .positions import line_starts


class OverlapError(ValueError):
    """Two edits touch the same text."""


def apply_edits(source: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping edits to ``source`` (positions refer to ``source``)."""
    starts = line_starts(source)

    def offset(line: int, column: int) -> int:
        if line - 1 >= len(starts):
            return len(source)
        return min(starts[line - 1] + column - 1, len(source))

    spans = sorted(
        ((offset(e.line, e.column), offset(e.end_line, e.end_column), e.content) for e in edits),
        key=lambda s: (s[0], s[1]),
    )
    out: List[str] = []
    cursor = 0
    for begin, end, content in spans:
        if begin < cursor:
            raise OverlapError(f"edits overlap at offset {begin}")
        out.append(source[cursor:begin])
        out.append(content)
        cursor = end
    out.append(source[cursor:])
    return "".join(out)


def take_fixes(source: str, fixes: Sequence[Fix]) -> List[Fix]:
    """The fixes, in order, that can be applied together: a fix that overlaps
    one already taken waits for the next round."""
    taken: List[Fix] = []
    edits: List[Edit] = []
    for fix in fixes:
        candidate = edits + [e for e in fix.edits if e not in edits]
        try:
            apply_edits(source, candidate)
        except OverlapError:
            continue
        taken.append(fix)
        edits = candidate
    return taken


def apply_fixes(source: str, fixes: Sequence[Fix]) -> str:
    """Apply the fixes that do not overlap (see ``take_fixes``); identical
    edits (the same import added by two fixes) are applied once."""
    edits: List[Edit] = []
    for fix in take_fixes(source, fixes):
        edits.extend(e for e in fix.edits if e not in edits)
    return apply_edits(source, edits)


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


def _parses(text: str) -> bool:
    import ast

    import libcst as cst

    try:
        ast.parse(text)
        cst.parse_module(text)
    except Exception:  # any failure to parse means: do not write this
        return False
    return True


def wanted(finding: Finding, unsafe: bool) -> bool:
    return finding.fix is not None and (unsafe or finding.fix.applicability == SAFE)


def fix_text(
    text: str,
    lint: Callable[[str], Tuple[List[Finding], List[str]]],
    unsafe: bool = False,
) -> FixOutcome:
    """Apply fixes to a fixed point (bounded): lint, apply every non-overlapping
    fix, re-lint, repeat. A round whose result does not parse is retried fix by
    fix, and a fix that breaks the file is dropped and reported, never kept."""
    applied: Counter = Counter()
    dropped: List[str] = []
    banned: set = set()
    findings, errors = lint(text)
    for _ in range(MAX_ROUNDS):
        todo = [
            f for f in findings
            if wanted(f, unsafe) and (f.code, f.message, f.fix) not in banned
        ]
        if not todo:
            break
        accepted = take_fixes(text, [f.fix for f in todo])  # type: ignore[misc]
        taken = [f for f in todo if f.fix in accepted]
        candidate = apply_fixes(text, [f.fix for f in taken])  # type: ignore[misc]
        if not _parses(candidate):
            # find the culprits one by one; keep the first fix that is sound
            candidate, taken = text, []
            for finding in todo:
                attempt = apply_fixes(text, [finding.fix])  # type: ignore[list-item]
                if attempt != text and _parses(attempt):
                    candidate, taken = attempt, [finding]
                    break
                banned.add((finding.code, finding.message, finding.fix))
                dropped.append(
                    f"{finding.path}:{finding.line}:{finding.column}: {finding.code}: "
                    "fix dropped, its result would not parse"
                )
        if candidate == text:
            break
        applied.update(f.code for f in taken)
        text = candidate
        findings, errors = lint(text)
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
