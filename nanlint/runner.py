"""Glue between the CLI and the engine: which rules for which file, read, lint."""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

from .config import Settings
from .dtypes import DTYPES, DtypeFacts
from .files import ReadError, Source, TooLarge, decode, discover, display_path, read_bytes
from .finding import SYNTAX_ERROR_CODE, Finding, at_least
from .fix import FixOutcome, write_atomic
from .registry import RuleInfo, load, reports_syntax_errors, select_infos

if TYPE_CHECKING:
    from .analysis.project import ProjectFile
    from .cache import Cache
    from .rule import Rule


@dataclass
class Selection:
    """The rules in force, resolved once from config + command line: their
    metadata (``infos``); the rule classes are imported when a file is linted,
    so a run answered from the cache never imports them (nor libcst)."""

    infos: List[RuleInfo]
    dtypes: Tuple[DtypeFacts, ...]
    settings: Settings
    cache: Optional["Cache"] = None
    #: whether NL000 (syntax errors) is reported, before per-file-ignores
    syntax_errors: bool = True

    @cached_property
    def rules(self) -> List[Type["Rule"]]:
        """The selected rule classes (imported on first use)."""
        return load(self.infos)

    def prepare(self) -> None:
        """Import the engine and the rules before worker processes fork, so
        that the workers share those imports instead of each repeating them."""
        from . import engine  # noqa: F401

        self.rules  # noqa: B018 (imports the rules)

    def enable_cache(self) -> None:
        """Cache findings under the configured cache directory."""
        from .cache import DEFAULT_DIR, Cache

        directory = Path(self.settings.cache_dir or DEFAULT_DIR)
        if not directory.is_absolute():
            directory = self.settings.root / directory
        fingerprint = json.dumps(
            [[d.name for d in self.dtypes], self.settings.rule_options, self.settings.min_confidence,
             self.settings.max_file_size],
            sort_keys=True, default=str,
        )
        self.cache = Cache(directory, fingerprint)

    @classmethod
    def build(cls, settings: Settings) -> "Selection":
        """The rules and dtypes the settings select (command-line flags are
        already folded into them)."""
        infos = select_infos(settings.select, settings.extend_select, settings.ignore)
        dtypes = tuple(DTYPES[n] for n in settings.target_dtypes)
        infos = [i for i in infos if i.active(dtypes)]
        syntax_errors = reports_syntax_errors(settings.select, settings.extend_select, settings.ignore)
        return cls(infos, dtypes, settings, syntax_errors=syntax_errors)

    def _dropped(self, path: Path) -> List[str]:
        """The per-file-ignores selectors that apply to ``path``."""
        ignores = self.settings.per_file_ignores
        if not ignores:
            return []
        try:
            rel = path.resolve().relative_to(self.settings.root).as_posix()
        except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            rel = path.as_posix()
        dropped: List[str] = []
        for pattern, codes in ignores.items():
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path.name, pattern):
                dropped.extend(codes)
        return dropped

    def rules_for(self, path: Path) -> List[Type["Rule"]]:
        codes = set(self._codes(path))
        return [r for r in self.rules if r.code in codes]

    def _codes(self, path: Path) -> List[str]:
        """The codes of the selected rules that run on ``path``."""
        dropped = self._dropped(path)
        return [i.code for i in self.infos if not any(c == "ALL" or i.code.startswith(c) for c in dropped)]

    def codes_for(self, path: Path) -> List[str]:
        """The codes reported in ``path``: its rules, and NL000 unless ignored."""
        codes = self._codes(path)
        if self.syntax_errors and not any(c == "ALL" or SYNTAX_ERROR_CODE.startswith(c) for c in self._dropped(path)):
            codes.insert(0, SYNTAX_ERROR_CODE)
        return codes

    def keep(self, findings: List[Finding], path: Path) -> List[Finding]:
        """``findings`` without NL000 where it is ignored, and without those
        below the minimum confidence."""
        minimum = self.settings.min_confidence
        findings = [f for f in findings if at_least(f.confidence, minimum)]
        if any(f.code == SYNTAX_ERROR_CODE for f in findings) and SYNTAX_ERROR_CODE not in self.codes_for(path):
            return [f for f in findings if f.code != SYNTAX_ERROR_CODE]
        return findings


@dataclass
class FileResult:
    path: str
    findings: List[Finding]
    errors: List[str]
    source: Optional[Source] = None
    warnings: List[str] = field(default_factory=list)


def too_large(size: int, display: str, selection: Selection) -> Optional[str]:
    limit = selection.settings.max_file_size
    if limit and size > limit:
        return (f"{display}: skipped, {size:,} bytes is over max-file-size "
                f"({limit:,} bytes; raise it, or set 0 for no limit, in [tool.nanlint])")
    return None


def read_input(path: Path, selection: Selection) -> bytes:
    """A file's bytes; TooLarge past max-file-size (for a notebook the limit
    is on its code, measured after reading), ReadError when it cannot be read."""
    return read_bytes(path, 0 if is_notebook(path) else selection.settings.max_file_size)


def project_file(path: Path, text: str, selection: Selection) -> "ProjectFile":
    """The file's view of the checked project: its imports resolved to the
    project's modules (read from the text, no parse)."""
    from .analysis.project import ProjectFile

    return ProjectFile(str(path), text, str(selection.settings.root))


def check_text(text: str, display: str, path: Path, selection: Selection,
               project: Optional["ProjectFile"] = None) -> Tuple[List[Finding], List[str]]:
    from .engine import lint_source

    result = lint_source(
        text,
        display,
        selection.rules_for(path),
        selection.dtypes,
        selection.settings.rule_options,
        project=project or project_file(path, text, selection),
    )
    return selection.keep(result.findings, path), result.errors


def is_notebook(path: Path) -> bool:
    return path.suffix.lower() == ".ipynb"


def decode_notebook(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReadError(f"cannot decode notebook as utf-8: {exc.reason}") from None


def check_notebook_text(raw: str, display: str, path: Path, selection: Selection) -> Tuple[List[Finding], List[str]]:
    """Findings of a notebook's code cells, each with its cell."""
    from .notebook import load

    nb = load(raw, display)
    return _lint_notebook(nb, nb.virtual_source(), display, path, selection)


def _lint_notebook(nb, virtual: str, display: str, path: Path, selection: Selection,
                   project: Optional["ProjectFile"] = None) -> Tuple[List[Finding], List[str]]:
    from .notebook import map_findings

    findings, errors = check_text(virtual, display, path, selection, project)
    return selection.keep(map_findings(nb, virtual, findings), path), errors


def _check_notebook_file(data: bytes, display: str, path: Path, selection: Selection) -> FileResult:
    from .notebook import load

    try:
        nb = load(decode_notebook(data), display)
    except ReadError as exc:
        return FileResult(display, [], [f"{display}: {exc}"])
    virtual = nb.virtual_source()
    # outputs (images) can make a notebook large: the limit is on its code
    skipped = too_large(len(virtual.encode("utf-8")), display, selection)
    if skipped:
        return FileResult(display, [], [], warnings=[skipped])
    project = project_file(path, virtual, selection)
    key, hit = _cache_lookup(data, display, path, selection, project)
    if hit is not None:
        return hit
    findings, errors = _lint_notebook(nb, virtual, display, path, selection, project)
    if selection.cache is not None and not errors:
        selection.cache.put(key, findings, project.requires() if project is not None else ())
    return FileResult(display, findings, errors)


def check_file(path: Path, selection: Selection) -> FileResult:
    display = display_path(path)
    try:
        data = read_input(path, selection)
    except TooLarge as exc:
        return FileResult(display, [], [], warnings=[too_large(exc.size, display, selection)])
    except ReadError as exc:
        return FileResult(display, [], [f"{display}: {exc}"])
    if is_notebook(path):
        return _check_notebook_file(data, display, path, selection)
    project = project_file(path, data.decode("utf-8", "replace"), selection) if selection.cache is not None else None
    key, hit = _cache_lookup(data, display, path, selection, project)
    if hit is not None:
        return hit
    try:
        source = decode(data)
    except ReadError as exc:
        return FileResult(display, [], [f"{display}: {exc}"])
    findings, errors = check_text(source.text, display, path, selection, project)
    if selection.cache is not None and not errors:
        selection.cache.put(key, findings, project.requires() if project is not None else ())
    return FileResult(display, findings, errors, source, noqa_warnings(source.text, display))


def noqa_warnings(text: str, display: str) -> List[str]:
    from .noqa import unknown_noqa_codes
    from .registry import infos_by_code

    return unknown_noqa_codes(text, display, infos_by_code().values())


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _check_lean(path: Path, selection: Selection) -> FileResult:
    result = check_file(path, selection)
    result.source = None  # the caller only needs findings: keep results small
    return result


def _die_with_parent(parent: int) -> None:
    """End this worker when the parent process ends, even while it is inside
    native code (kill -9 of the parent must not leave workers writing files
    and holding the caller's pipes open)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # not Linux: watch the parent from a thread
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.2)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent ended before the watch began
        os._exit(1)


def _worker(conn, func: Callable[[Path], Any], parent: int) -> None:
    """A worker's loop: receive (index, path), send back (index, ok, result)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stop at once, even in native code
    _die_with_parent(parent)
    from .files import quiet_parse_warnings

    quiet_parse_warnings()  # a spawned worker starts without the parent's filters
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        index, path = task
        try:
            reply = (index, True, func(path))
        except Exception as exc:  # a bug must cost only its file
            reply = (index, False, f"internal error: {type(exc).__name__}: {exc}")
        conn.send(reply)


@contextmanager
def termination_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back while a file is written: a worker told to
    stop ends right after its write, never in the middle of it."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pool_context():
    import multiprocessing

    # fork shares the already imported libcst and rules with the workers; where
    # it is unavailable or unsafe (macOS, Windows) spawn re-imports only nanlint.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _death(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Pool:
    """Worker processes that take one file at a time. A worker that dies (a
    segfault in native code, the out-of-memory killer) costs only the file it
    held: that file gets ``crashed(path, why)`` as its result, a new worker
    takes its place, and the other files are checked as usual."""

    def __init__(self, func: Callable[[Path], Any], crashed: Callable[[Path, str], Any], size: int) -> None:
        self.func = func
        self.crashed = crashed
        self.size = size
        self.context = _pool_context()
        self.workers: Dict[Any, Tuple[Any, Optional[int]]] = {}  # conn -> (process, task index)

    def _start(self) -> Any:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child_end, self.func, os.getpid()), daemon=True)
        process.start()
        child_end.close()  # the parent sees EOF when the worker dies
        self.workers[parent_end] = (process, None)
        return parent_end

    def run(self, files: Sequence[Path]) -> List[Any]:
        from multiprocessing.connection import wait

        results: List[Any] = [None] * len(files)
        todo = _largest_last(files)  # taken from the end: the largest files first
        try:
            for _ in range(min(self.size, len(files))):
                self._give(self._start(), todo, files)
            while any(index is not None for _, index in self.workers.values()):
                for conn in wait([c for c, (_, index) in self.workers.items() if index is not None]):
                    process, index = self.workers[conn]
                    try:
                        done, ok, value = conn.recv()
                    except (EOFError, OSError):
                        process.join()
                        why = f"the worker process died while checking it ({_death(process)}); not checked"
                        results[index] = self.crashed(files[index], why)
                        del self.workers[conn]
                        conn.close()
                        if todo:
                            conn = self._start()
                        else:
                            continue
                    else:
                        results[done] = value if ok else self.crashed(files[done], value)
                    self._give(conn, todo, files)
        except BaseException:
            self._stop(terminate=True)  # interrupted: workers end now (a write in progress completes)
            raise
        self._stop(terminate=False)
        return results

    def _give(self, conn, todo: List[int], files: Sequence[Path]) -> None:
        process, _ = self.workers[conn]
        index = todo.pop() if todo else None
        self.workers[conn] = (process, index)
        if index is not None:
            conn.send((index, files[index]))

    def _stop(self, terminate: bool) -> None:
        for conn, (process, _) in self.workers.items():
            try:
                if terminate:
                    process.terminate()
                else:
                    conn.send(None)
            except (OSError, ValueError):
                pass
        for conn, (process, _) in self.workers.items():
            process.join()
            conn.close()
        self.workers.clear()


def _largest_last(files: Sequence[Path]) -> List[int]:
    """The files' indices, smallest first. Workers take them from the end, so
    the largest files start first and the run ends on small ones: handed out
    in path order, a large file met last kept one worker busy while the
    others sat idle (the order of results does not change)."""

    def size(index: int) -> int:
        try:
            return files[index].stat().st_size
        except OSError:
            return 0

    return sorted(range(len(files)), key=size)


def map_files(
    func: Callable[[Path], Any], files: Sequence[Path], jobs: int, crashed: Callable[[Path, str], Any]
) -> List[Any]:
    """``func(path)`` for each file, results in file order, on up to ``jobs``
    processes (``func`` must be picklable: a module-level function or a
    ``functools.partial`` of one). A file whose worker dies, or whose ``func``
    raises, gets ``crashed(path, why)`` instead."""
    if jobs <= 1 or len(files) < 4:
        return [func(f) for f in files]
    return _Pool(func, crashed, min(jobs, len(files))).run(files)


def _check_crashed(path: Path, why: str) -> FileResult:
    display = display_path(path)
    return FileResult(display, [], [f"{display}: {why}"])


def _fix_crashed(path: Path, why: str) -> "FixResult":
    display = display_path(path)
    return FixResult(display, False, None, [f"{display}: {why}; left untouched"])


def discover_files(paths: Sequence[Path], settings: Settings):
    return discover(paths, settings.excludes, settings.root, settings.respect_gitignore, settings.force_exclude)


def check_paths(
    paths: Sequence[Path], selection: Selection, jobs: int = 1
) -> Tuple[List[FileResult], List[str]]:
    files, problems = discover_files(paths, selection.settings)
    errors = [f"{p}: {why}" for p, why in problems]
    done: Dict[Path, FileResult] = {}
    todo = files
    if selection.cache is not None:
        # Cache hits are answered here: a warm run starts no worker at all.
        todo = []
        for f in files:
            hit = _cached(f, selection)
            if hit is None:
                todo.append(f)
            else:
                done[f] = hit
    if todo:
        selection.prepare()
    for f, result in zip(todo, map_files(partial(_check_lean, selection=selection), todo, jobs, _check_crashed)):
        done[f] = result
    return [done[f] for f in files], errors


def _cache_lookup(data: bytes, display: str, path: Path, selection: Selection,
                  project: Optional["ProjectFile"]) -> Tuple[str, Optional[FileResult]]:
    """(cache key, the cached result or None); ("", None) without a cache.
    The key covers the content of the project modules the file imports
    directly: a change there (an imported constant) is a miss."""
    if selection.cache is None or project is None:
        return "", None
    key = selection.cache.key(data, display, selection.codes_for(path), project.dependencies())
    from .analysis.project import unchanged

    hit = selection.cache.get(key, unchanged)
    if hit is None:
        return key, None
    return key, FileResult(display, hit, [], warnings=_hit_warnings(data, display, path))


def _cached(path: Path, selection: Selection) -> Optional[FileResult]:
    try:
        data = read_input(path, selection)
    except ReadError:
        return None  # the worker reports it
    if is_notebook(path):
        from .notebook import load

        try:
            text = load(decode_notebook(data), display_path(path)).virtual_source()
        except ReadError:
            return None  # the worker reports it
    else:
        text = data.decode("utf-8", "replace")
    return _cache_lookup(data, display_path(path), path, selection, project_file(path, text, selection))[1]


def _hit_warnings(data: bytes, display: str, path: Path) -> List[str]:
    """The `# noqa` warnings of a file answered from the cache (not cached
    themselves), as check_file gives them: none for a notebook, whose lines
    are not the JSON file's."""
    if is_notebook(path) or b"noqa" not in data.lower():  # a C loop; a case-blind regex is 5x slower
        return []
    try:
        return noqa_warnings(decode(data).text, display)
    except ReadError:
        return []


@dataclass
class FixResult:
    path: str
    changed: bool
    outcome: Optional["FixOutcome"]
    errors: List[str]
    diff: str = ""
    warnings: List[str] = field(default_factory=list)


def encode(source: Source, text: str) -> bytes:
    data = text.encode(source.encoding)
    return (b"\xef\xbb\xbf" + data) if source.bom else data


def fix_notebook_text(raw: str, display: str, path: Path, selection: Selection, unsafe: bool
                      ) -> Tuple[FixOutcome, str]:
    """(outcome whose ``text`` is the new notebook JSON and whose findings are
    per cell, diff of the changed cells)."""
    from .fix import fix_text, unified_diff
    from .notebook import load, map_findings, rebuild

    nb = load(raw, display)
    outcome = fix_text(nb.virtual_source(), lambda t: check_text(t, display, path, selection), unsafe)
    new_raw, changes = rebuild(nb, outcome.text)
    outcome.remaining = map_findings(nb, outcome.text, outcome.remaining)
    outcome.text = new_raw
    diff = "".join(unified_diff(f"{display}:cell {index}", old, new) for index, old, new in changes)
    return outcome, diff


def _fix_notebook_file(path: Path, display: str, original: bytes, selection: Selection, unsafe: bool,
                       write: bool) -> FixResult:
    from .fix import WriteError

    try:
        raw = decode_notebook(original)
        outcome, diff = fix_notebook_text(raw, display, path, selection, unsafe)
    except ReadError as exc:
        return FixResult(display, False, None, [f"{display}: {exc}"])
    changed = outcome.text != raw
    errors = list(outcome.errors)
    if changed and write:
        bom = b"\xef\xbb\xbf" if original.startswith(b"\xef\xbb\xbf") else b""
        try:
            with termination_deferred():
                write_atomic(path, bom + outcome.text.encode("utf-8"), original, selection.settings.root)
        except WriteError as exc:
            return FixResult(display, False, outcome, errors + [f"{display}: {exc}"])
    return FixResult(display, changed, outcome, errors, diff)


def fix_file(path: Path, selection: Selection, unsafe: bool, write: bool) -> FixResult:
    """Fix one file; write it (atomically) only when ``write`` and it changed."""
    from .fix import WriteError, fix_text, unified_diff

    display = display_path(path)
    try:
        original = read_input(path, selection)
    except TooLarge as exc:
        return FixResult(display, False, None, [], warnings=[too_large(exc.size, display, selection)])
    except ReadError as exc:
        return FixResult(display, False, None, [f"{display}: {exc}"])
    if is_notebook(path):
        return _fix_notebook_file(path, display, original, selection, unsafe, write)
    try:
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
            with termination_deferred():
                write_atomic(path, data, original, selection.settings.root)
        except WriteError as exc:
            return FixResult(display, False, outcome, errors + [f"{display}: {exc}"])
    return FixResult(display, changed, outcome, errors, diff, noqa_warnings(source.text, display))


def fix_paths(
    paths: Sequence[Path], selection: Selection, unsafe: bool, write: bool, jobs: int = 1
) -> Tuple[List[FixResult], List[str]]:
    files, problems = discover_files(paths, selection.settings)
    errors = [f"{p}: {why}" for p, why in problems]
    func = partial(fix_file, selection=selection, unsafe=unsafe, write=write)
    if files:
        selection.prepare()
    return map_files(func, files, jobs, _fix_crashed), errors
