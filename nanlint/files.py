"""Finding the files to check and reading them into text."""

from __future__ import annotations

import codecs
import fnmatch
import io
import os
import stat
import tokenize
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

# Stubs (.pyi) have no code that runs, so no numerical hazard: directories are
# searched for .py and Jupyter notebooks only (a .pyi named explicitly is still checked).
PYTHON_SUFFIXES = (".py", ".ipynb")


def quiet_parse_warnings() -> None:
    """Python's SyntaxWarnings about the code nanlint parses (``1if x else
    y``, ``"\\d"``) are the checked code's business, not nanlint's output: they
    are raised from a text parsed in memory (``<unknown>``), never from a file
    a user runs, so ``confirm``'s models keep theirs. Set by the CLI and by
    each worker (a spawned one starts without the parent's filters); here,
    beside the reading of the files, to keep the CLI's start-up light."""
    warnings.filterwarnings("ignore", category=SyntaxWarning, module="<")


@dataclass(frozen=True)
class Source:
    """A decoded source file and how to write it back byte-identically."""

    text: str
    encoding: str  # codec name, e.g. "utf-8"
    bom: bool


class ReadError(Exception):
    """A file that cannot be read or decoded; reported with exit code 2."""


def decode(data: bytes) -> Source:
    bom = data.startswith(codecs.BOM_UTF8)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        # no usable coding declaration and the bytes are not UTF-8
        raise ReadError(
            "cannot decode as utf-8 (and no valid `# -*- coding: ... -*-` declaration)"
        ) from None
    if encoding == "utf-8-sig":
        encoding = "utf-8"
    body = data[len(codecs.BOM_UTF8):] if bom else data
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ReadError(f"cannot decode as {encoding}: {reason}") from None
    return Source(text, encoding, bom)


class TooLarge(ReadError):
    """A file over ``max-file-size``: skipped (a warning), not an error."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size:,} bytes")
        self.size = size


_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def read_bytes(path: Path, limit: int = 0) -> bytes:
    """The bytes of a regular file (through symlinks), reading at most
    ``limit`` + 1 bytes (0: no limit): its type and size are checked on the
    opened descriptor first, so a FIFO, a device (``/dev/zero``) or a file over
    the limit is never read, and the open does not block."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise ReadError("is a directory") from None
    except OSError as exc:
        raise ReadError(exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as handle:
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ReadError("is a directory")
            if not stat.S_ISREG(st.st_mode):
                kind = _KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
                raise ReadError(f"is {kind}, not a regular file; not read")
            if limit and st.st_size > limit:
                raise TooLarge(st.st_size)
            data = handle.read(limit + 1) if limit else handle.read()
        except OSError as exc:
            raise ReadError(exc.strerror or str(exc)) from None
    if limit and len(data) > limit:  # it grew after the fstat
        raise TooLarge(len(data))
    return data


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a temp file named after it may be in use)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or not a pid: assume it is in use
    return True


def read_source(path: Path) -> Source:
    return decode(read_bytes(path))


def display_path(path: Path) -> str:
    text = str(path)
    if path.is_absolute():
        try:
            text = os.path.relpath(path)
        except ValueError:
            return text
        if text.startswith(".." + os.sep):
            return str(path)
    return text


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return path.as_posix()


def _matches(patterns: Sequence[str], path: Path, root: Path) -> bool:
    name = path.name
    rel = None  # resolved only when a pattern needs the path (name patterns do not)
    for pattern in patterns:
        if "/" in pattern:
            if rel is None:
                rel = _relative(path, root)
            pat = pattern.rstrip("/")
            if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat + "/*"):
                return True
        elif fnmatch.fnmatch(name, pattern):
            return True
    return False


def is_excluded(path: Path, excludes: Sequence[str], root: Path) -> bool:
    return _matches(excludes, path, root)


def discover(
    paths: Sequence[Path], excludes: Sequence[str], root: Path,
    respect_gitignore: bool = True, force_exclude: bool = False,
) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Files to check, sorted and de-duplicated, and (path, error) for paths that
    could not be used. Directories are searched for ``*.py`` and ``*.ipynb``
    outside excluded folders (and, with ``respect_gitignore``, outside what git
    ignores). Files given explicitly are always checked, unless
    ``force_exclude`` (for pre-commit, which passes every changed file)."""
    from .gitignore import GitIgnore

    found: List[Path] = []
    errors: List[Tuple[str, str]] = []
    seen = set()
    ignore = GitIgnore() if respect_gitignore else None

    def skipped(p: Path, is_dir: bool) -> bool:
        return is_excluded(p, excludes, root) or (ignore is not None and ignore.ignored(p, is_dir))

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            found.append(p)

    for given in paths:
        if given.is_dir():
            if force_exclude and skipped(given, True):
                continue
            for file in _walk(given, skipped, errors):
                add(file)
        elif given.exists() or given.is_symlink():
            if force_exclude and skipped(given, False):
                continue
            add(given)
        else:
            errors.append((str(given), "no such file or directory"))
    found.sort(key=lambda p: p.as_posix())
    return found, errors


def _walk(top: Path, skipped, errors: List[Tuple[str, str]]) -> Iterator[Path]:
    def onerror(exc: OSError) -> None:
        errors.append((exc.filename or str(top), exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(top, onerror=onerror):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not skipped(base / d, True))
        for name in sorted(filenames):
            if name.endswith(PYTHON_SUFFIXES):
                path = base / name
                if not skipped(path, False):
                    yield path
