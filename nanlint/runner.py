"""Glue between the CLI and the engine: which rules for which file, read, lint."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

from .config import Settings
from .dtypes import DTYPES, DtypeFacts
from .engine import lint_source
from .files import ReadError, Source, discover, display_path, read_source
from .finding import Finding
from .fix import FixOutcome, write_atomic
from .registry import select_rules
from .rule import Rule


@dataclass
class Selection:
    """The rules in force, resolved once from config + command line."""

    rules: List[Type[Rule]]
    dtypes: Tuple[DtypeFacts, ...]
    settings: Settings
    _per_file: Dict[str, List[Type[Rule]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        select: Optional[Sequence[str]] = None,
        extend_select: Sequence[str] = (),
        ignore: Sequence[str] = (),
        target_dtypes: Optional[Sequence[str]] = None,
    ) -> "Selection":
        chosen_select = list(select) if select else settings.select
        rules = select_rules(
            chosen_select,
            list(settings.extend_select) + list(extend_select),
            list(settings.ignore) + list(ignore),
        )
        names = list(target_dtypes) if target_dtypes else settings.target_dtypes
        dtypes = tuple(DTYPES[n] for n in names)
        rules = [r for r in rules if r.active(dtypes)]
        return cls(rules, dtypes, settings)

    def rules_for(self, path: Path) -> List[Type[Rule]]:
        ignores = self.settings.per_file_ignores
        if not ignores:
            return self.rules
        try:
            rel = path.resolve().relative_to(self.settings.root).as_posix()
        except (ValueError, OSError):
            rel = path.as_posix()
        dropped: List[str] = []
        for pattern, codes in ignores.items():
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path.name, pattern):
                dropped.extend(codes)
        if not dropped:
            return self.rules
        return [
            r for r in self.rules if not any(c == "ALL" or r.code.startswith(c) for c in dropped)
        ]


@dataclass
class FileResult:
    path: str
    findings: List[Finding]
    errors: List[str]
    source: Optional[Source] = None


def check_text(text: str, display: str, path: Path, selection: Selection) -> Tuple[List[Finding], List[str]]:
    result = lint_source(
        text,
        display,
        selection.rules_for(path),
        selection.dtypes,
        selection.settings.rule_options,
    )
    return result.findings, result.errors


def check_file(path: Path, selection: Selection) -> FileResult:
    display = display_path(path)
    try:
        source = read_source(path)
    except ReadError as exc:
        return FileResult(display, [], [f"{display}: {exc}"])
    findings, errors = check_text(source.text, display, path, selection)
    return FileResult(display, findings, errors, source)


def check_paths(paths: Sequence[Path], selection: Selection) -> Tuple[List[FileResult], List[str]]:
    files, problems = discover(paths, selection.settings.excludes, selection.settings.root)
    errors = [f"{p}: {why}" for p, why in problems]
    results = [check_file(f, selection) for f in files]
    return results, errors


@dataclass
class FixResult:
    path: str
    changed: bool
    outcome: Optional["FixOutcome"]
    errors: List[str]
    diff: str = ""


def encode(source: Source, text: str) -> bytes:
    data = text.encode(source.encoding)
    return (b"\xef\xbb\xbf" + data) if source.bom else data


def fix_file(path: Path, selection: Selection, unsafe: bool, write: bool) -> FixResult:
    """Fix one file; write it (atomically) only when ``write`` and it changed."""
    from .fix import WriteError, fix_text, unified_diff

    display = display_path(path)
    try:
        original = path.read_bytes()
    except IsADirectoryError:
        return FixResult(display, False, None, [f"{display}: is a directory"])
    except OSError as exc:
        return FixResult(display, False, None, [f"{display}: {exc.strerror or exc}"])
    try:
        from .files import decode

        source = decode(original)
    except ReadError as exc:
        return FixResult(display, False, None, [f"{display}: {exc}"])
    outcome = fix_text(source.text, lambda t: check_text(t, display, path, selection), unsafe)
    errors = list(outcome.errors)
    changed = outcome.text != source.text
    diff = unified_diff(display, source.text, outcome.text) if changed else ""
    if changed and write:
        try:
            data = encode(source, outcome.text)
        except UnicodeEncodeError:
            return FixResult(display, False, outcome, errors + [
                f"{display}: the fix needs characters that {source.encoding} cannot encode; left untouched"])
        try:
            write_atomic(path, data, original)
        except WriteError as exc:
            return FixResult(display, False, outcome, errors + [f"{display}: {exc}"])
    return FixResult(display, changed, outcome, errors, diff)


def fix_paths(paths: Sequence[Path], selection: Selection, unsafe: bool, write: bool) -> Tuple[List[FixResult], List[str]]:
    files, problems = discover(paths, selection.settings.excludes, selection.settings.root)
    errors = [f"{p}: {why}" for p, why in problems]
    return [fix_file(f, selection, unsafe, write) for f in files], errors
