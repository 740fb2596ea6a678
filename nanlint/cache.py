"""A content-addressed cache of findings.

The key covers everything a file's findings depend on: the file's bytes, the
name nanlint reports it under, nanlint's version and code (so an upgrade or an
edited rule invalidates it by itself), the rules in force for the file, the
target dtypes and the rule options. Entries are written to a temp file and
renamed into place, so concurrent runs never read a half-written entry; a
corrupt or unreadable entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import __version__
from .finding import Edit, Finding, Fix

DEFAULT_DIR = ".nanlint_cache"


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


def _finding_from_dict(d: Dict[str, Any]) -> Finding:
    fix = d.get("fix")
    return Finding(
        code=d["code"], name=d["name"], message=d["message"], path=d["path"],
        line=d["line"], column=d["column"], end_line=d["end_line"], end_column=d["end_column"],
        fix=None if fix is None else Fix(
            fix["applicability"], fix["message"], tuple(Edit(**e) for e in fix["edits"])
        ),
        cell=d.get("cell"),
        confidence=d["confidence"],
    )


class Cache:
    def __init__(self, directory: Path, settings_fingerprint: str) -> None:
        self.root = directory
        self.directory = directory / f"v{__version__}-{code_fingerprint()}"
        self.settings_fingerprint = settings_fingerprint
        self._prepared = False

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
        return h.hexdigest()

    def _entry(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Optional[List[Finding]]:
        try:
            with open(self._entry(key), "rb") as handle:
                return [_finding_from_dict(d) for d in json.load(handle)]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, findings: Sequence[Finding]) -> None:
        entry = self._entry(key)
        try:
            self._prepare()
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump([f.to_dict() for f in findings], handle, separators=(",", ":"))
            os.replace(tmp, entry)
        except OSError:
            pass  # a cache that cannot be written is only a slower run

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._prepared = True
        self.root.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# Created by nanlint: the cache is not to be committed.\n*\n")
        for other in self.root.iterdir():  # entries of other versions are dead weight
            if other.is_dir() and other.name.startswith("v") and other != self.directory:
                shutil.rmtree(other, ignore_errors=True)
