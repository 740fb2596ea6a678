"""A content-addressed cache of findings.

The key covers everything a file's findings depend on: the file's bytes, the
name nanlint reports it under, nanlint's version and code (so an upgrade or an
edited rule invalidates it by itself), the Python that runs it (the syntax it
accepts), the rules in force for the file, the target dtypes, the rule options
and ``max-file-size``.

First, do no harm. The cache directory is used only when nanlint created it:
it must be a real directory (not a symlink) holding nanlint's ``CACHEDIR.TAG``,
or be missing or empty, and then nanlint creates it and writes that tag and a
``.gitignore`` into it. Any other directory (the project itself, a symlink, a
folder of the user's) is left alone and the run goes on without a cache.
Inside its own directory nanlint removes only files of its own layout
(``v<version>-<code>/<2 hex>/<64 hex>.json`` and its temp files), through
directory descriptors opened without following symlinks, and then the folders
those leave empty.

An entry names its key and the SHA-256 of its findings, which are checked
against a strict schema; anything unexpected (another file type, a symlink, a
size over the bound, a bad checksum, deep or odd JSON) is a miss. Entries are
written to a temp file and renamed into place, so concurrent runs never read a
half-written entry; a temp file left by a killed run is removed by a later run
once its process is gone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import __version__
from .files import process_alive
from .finding import CONFIDENCES, Edit, Finding, Fix

DEFAULT_DIR = ".nanlint_cache"

TAG_NAME = "CACHEDIR.TAG"
#: https://bford.info/cachedir/ — backup tools skip such a directory
TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by nanlint.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
GITIGNORE = "# Created by nanlint: the cache is not to be committed.\n*\n"
MAGIC = b"nanlint-cache-entry 1\n"
#: an entry larger than this is not one nanlint wrote for a source file it checks
MAX_ENTRY_BYTES = 64 * 1024 * 1024

_VERSION_DIR = re.compile(r"v[0-9A-Za-z.+!_-]+-[0-9a-f]{16}\Z")
_SHARD = re.compile(r"[0-9a-f]{2}\Z")
_ENTRY = re.compile(r"[0-9a-f]{64}\.json\Z")
_TEMP = re.compile(r"[0-9a-f]{64}\.(\d+)\.[0-9a-f]{16}\.tmp\Z")
TEMP_DIR = "tmp"

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
#: the cache works on directory descriptors only (not on Windows: no cache there)
SUPPORTED = (
    hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd and os.unlink in os.supports_dir_fd
    and os.scandir in os.supports_fd
)


def code_fingerprint() -> str:
    """Changes whenever a file of nanlint or of its rules changes (size or mtime)."""
    import nanlint
    import nanlint.rules

    h = hashlib.sha256(__version__.encode())
    for package in (nanlint, nanlint.rules):
        for folder in package.__path__:
            _fingerprint_folder(h, folder, "")
    return h.hexdigest()[:16]


def _fingerprint_folder(h, folder: str, prefix: str) -> None:
    """Sizes and mtimes of the .py files of a package and its subpackages
    (``nanlint/analysis/`` decides findings as much as the rules do)."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.endswith(".py"):
            st = entry.stat()
            h.update(f"{prefix}{entry.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
            _fingerprint_folder(h, entry.path, f"{prefix}{entry.name}/")


# -- reading entries: a strict schema, anything else is a miss ---------------------------


class _Invalid(Exception):
    pass


def _int(d: Dict[str, Any], key: str) -> int:
    value = d[key]
    if type(value) is not int:
        raise _Invalid(key)
    return value


def _str(d: Dict[str, Any], key: str) -> str:
    value = d[key]
    if type(value) is not str:
        raise _Invalid(key)
    return value


def _dict(value: Any) -> Dict[str, Any]:
    if type(value) is not dict:
        raise _Invalid("not an object")
    return value


def _list(value: Any) -> List[Any]:
    if type(value) is not list:
        raise _Invalid("not a list")
    return value


def _edit(value: Any) -> Edit:
    d = _dict(value)
    return Edit(_int(d, "line"), _int(d, "column"), _int(d, "end_line"), _int(d, "end_column"),
                _str(d, "content"))


def _confidence(d: Dict[str, Any]) -> str:
    value = _str(d, "confidence")
    if value not in CONFIDENCES:
        raise _Invalid("confidence")
    return value


def _finding(value: Any) -> Finding:
    d = _dict(value)
    fix = d["fix"]
    if fix is not None:
        f = _dict(fix)
        edits = f["edits"]  # null: a notebook fix that also edits another cell
        fix = Fix(_str(f, "applicability"), _str(f, "message"),
                  () if edits is None else tuple(_edit(e) for e in _list(edits)))
    cell = d["cell"]
    if cell is not None and type(cell) is not int:
        raise _Invalid("cell")
    return Finding(
        _str(d, "code"), _str(d, "name"), _str(d, "message"), _str(d, "path"),
        _int(d, "line"), _int(d, "column"), _int(d, "end_line"), _int(d, "end_column"), fix, cell,
        _confidence(d),
    )


def encode_entry(key: str, findings: Sequence[Finding], requires: Sequence[Tuple[str, str]] = ()) -> bytes:
    """An entry: the findings, and -- when linting read facts from modules the
    key does not cover -- those modules' (path, content hash)."""
    items = [f.to_dict() for f in findings]
    body: Any = {"requires": [list(r) for r in requires], "findings": items} if requires else items
    payload = json.dumps(body, separators=(",", ":")).encode()
    return MAGIC + f"{key}\n{hashlib.sha256(payload).hexdigest()}\n".encode() + payload


def decode_entry(key: str, data: bytes,
                 holds: Optional[Callable[[List[Tuple[str, str]]], bool]] = None) -> Optional[List[Finding]]:
    """The findings of an entry, or None unless it is exactly what nanlint
    writes for ``key`` and the modules it requires are unchanged (``holds``
    decides; an entry that requires some is a miss without it)."""
    header = MAGIC + key.encode() + b"\n"
    if not data.startswith(header):
        return None
    digest, newline, payload = data[len(header):].partition(b"\n")
    if not newline or digest != hashlib.sha256(payload).hexdigest().encode():
        return None
    try:
        body = json.loads(payload)
        if isinstance(body, dict):
            requires = [(_text(r[0]), _text(r[1])) for r in _list(body.get("requires")) if len(_list(r)) == 2]
            if holds is None or not holds(requires):
                return None
            body = body.get("findings")
        return [_finding(d) for d in _list(body)]
    except (ValueError, KeyError, TypeError, RecursionError, _Invalid):
        return None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("expected a string")
    return value


def _read_regular(name: str, dir_fd: int, limit: int) -> Optional[bytes]:
    """The bytes of a regular file (no symlink, FIFO or device) of at most
    ``limit`` bytes, or None."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(st.st_size + 1)
        return data if len(data) == st.st_size else None
    except OSError:
        return None
    finally:
        os.close(fd)


# -- the directory --------------------------------------------------------------------


class Cache:
    def __init__(self, directory: Path, settings_fingerprint: str) -> None:
        self.root = directory
        self.version = f"v{__version__}-{code_fingerprint()}"
        self.settings_fingerprint = settings_fingerprint
        #: why the cache is not used (a warning for the user), once known
        self.problem: Optional[str] = None
        self._fd: Optional[int] = None  # of the version directory
        self._tmp_fd: Optional[int] = None
        self._opened = False

    def __getstate__(self) -> Dict[str, Any]:
        """A worker process gets the cache unopened: descriptors are not
        shared through pickling (a number could name another file there)."""
        state = dict(self.__dict__)
        state.update(_fd=None, _tmp_fd=None, _opened=False)
        return state

    def key(self, data: bytes, display: str, codes: Sequence[str],
            dependencies: Sequence[Tuple[str, str]] = ()) -> str:
        """``dependencies``: (path, content hash) of the project modules the
        file imports directly, whose summaries its findings may use."""
        h = hashlib.sha256(data)
        for dep_path, digest in dependencies:
            h.update(b"\0" + dep_path.encode("utf-8", "surrogateescape") + b"=" + digest.encode())
        h.update(b"\0" + display.encode("utf-8", "surrogateescape"))
        h.update(b"\0" + ",".join(codes).encode())
        h.update(b"\0" + self.settings_fingerprint.encode())
        h.update(b"\0" + sys.implementation.cache_tag.encode())  # e.g. cpython-311
        return h.hexdigest()

    def get(self, key: str, holds: Optional[Callable[[List[Tuple[str, str]]], bool]] = None) -> Optional[List[Finding]]:
        directory = self._version_fd()
        if directory is None:
            return None
        try:
            shard = os.open(key[:2], _DIR_FLAGS, dir_fd=directory)
        except OSError:
            return None
        try:
            data = _read_regular(f"{key}.json", shard, MAX_ENTRY_BYTES)
        finally:
            os.close(shard)
        return None if data is None else decode_entry(key, data, holds)

    def put(self, key: str, findings: Sequence[Finding], requires: Sequence[Tuple[str, str]] = ()) -> None:
        directory = self._version_fd()
        if directory is None or self._tmp_fd is None:
            return
        tmp = f"{key}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
        shard = None
        try:
            shard = _open_dir(key[:2], directory, create=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=self._tmp_fd)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(encode_entry(key, findings, requires))
                os.replace(tmp, f"{key}.json", src_dir_fd=self._tmp_fd, dst_dir_fd=shard)
            except BaseException:
                _unlink(tmp, self._tmp_fd)
                raise
        except OSError:
            pass  # a cache that cannot be written (a full disk) is only a slower run
        finally:
            if shard is not None:
                os.close(shard)

    # -- opening (and, the first time, creating or tidying) the directory ---------------

    def _version_fd(self) -> Optional[int]:
        if not self._opened:
            self._opened = True
            if not SUPPORTED:
                return None
            try:
                root = self._open_root()
            except OSError as exc:
                self.problem = f"cache disabled: cannot use {self.root}: {exc.strerror or exc}"
                return None
            if root is None:
                return None
            try:
                self._prune(root)
                self._fd = _open_dir(self.version, root, create=True)
                self._tmp_fd = _open_dir(TEMP_DIR, self._fd, create=True)
                _sweep_temps(self._tmp_fd)
            except OSError as exc:
                self.problem = f"cache disabled: cannot use {self.root}: {exc.strerror or exc}"
            finally:
                os.close(root)
        return self._fd

    def _open_root(self) -> Optional[int]:
        """A descriptor of the cache root if nanlint owns it (creating and
        tagging it when it is missing or empty); otherwise None, and why."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(self.root)
            except FileExistsError:
                pass  # another run made it just now: judge it as any existing one
            return self._open_root_existing()
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                self.problem = (f"cache disabled: {self.root} is not a directory (a symlink or a file); "
                                "nanlint keeps its cache only in a directory it created")
                return None
            raise
        return self._claim(fd)

    def _open_root_existing(self) -> Optional[int]:
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                self.problem = f"cache disabled: {self.root} is not a directory"
                return None
            raise
        return self._claim(fd)

    def _claim(self, fd: int) -> Optional[int]:
        """``fd`` if the directory is nanlint's or empty (then tagged now)."""
        if _read_regular(TAG_NAME, fd, len(TAG)) == TAG.encode():
            return fd
        if not os.listdir(fd):
            try:
                _create(TAG_NAME, fd, TAG)
                _create(".gitignore", fd, GITIGNORE)
                return fd
            except FileExistsError:  # another run is claiming it: check its tag once more
                if _read_regular(TAG_NAME, fd, len(TAG)) == TAG.encode():
                    return fd
            except OSError:
                os.close(fd)
                raise
        os.close(fd)
        self.problem = (
            f"cache disabled: {self.root} is not a cache directory nanlint created (no nanlint "
            f"{TAG_NAME}), so nothing there is written or deleted; set `cache-dir` to a new or "
            "empty directory (or delete a cache left by an older nanlint)"
        )
        return None

    def _prune(self, root: int) -> None:
        """Remove the entries of other nanlint versions: only files of the
        cache's own layout, then the directories they leave empty."""
        for entry in os.scandir(root):
            if entry.name != self.version and _VERSION_DIR.match(entry.name) and entry.is_dir(follow_symlinks=False):
                try:
                    version = _open_dir(entry.name, root)
                except OSError:
                    continue
                try:
                    for child in os.scandir(version):
                        if child.is_dir(follow_symlinks=False) and (_SHARD.match(child.name) or child.name == TEMP_DIR):
                            _remove_own_files(child.name, version)
                finally:
                    os.close(version)
                _rmdir(entry.name, root)


def _open_dir(name: str, dir_fd: int, create: bool = False) -> int:
    if create:
        try:
            os.mkdir(name, 0o777, dir_fd=dir_fd)
        except FileExistsError:
            pass
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _create(name: str, dir_fd: int, text: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _rmdir(name: str, dir_fd: int) -> None:
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass  # not empty: something that is not the cache's stays, and so does its folder


def _remove_own_files(name: str, parent: int) -> None:
    try:
        fd = _open_dir(name, parent)
    except OSError:
        return
    try:
        for entry in os.scandir(fd):
            if (_ENTRY.match(entry.name) or _TEMP.match(entry.name)) and entry.is_file(follow_symlinks=False):
                _unlink(entry.name, fd)
    finally:
        os.close(fd)
    _rmdir(name, parent)


def _sweep_temps(tmp: int) -> None:
    """Remove temp files of runs that died before renaming them (kill -9, a
    full disk): the process named in the file's name is gone."""
    for entry in os.scandir(tmp):
        m = _TEMP.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not process_alive(int(m.group(1))):
            _unlink(entry.name, tmp)
