"""``.gitignore`` matching for file discovery (``respect-gitignore``).

Git's rules, for the files git itself reads while walking a work tree: each
directory's ``.gitignore`` and the repository's ``.git/info/exclude``; the last
matching pattern wins, ``!`` re-includes, a trailing ``/`` matches directories
only, a pattern with a ``/`` elsewhere is anchored to its file's directory,
``**`` spans directories. A file inside an ignored directory stays ignored
(the walk never enters that directory), as in git. Outside a git work tree no
``.gitignore`` applies. The user's global excludes file is not read: CI and
teammates would not see it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Pattern, Tuple

# (regex matched against the path relative to the pattern's base, negated, directories only)
Rule = Tuple[Pattern[str], bool, bool]


def _translate(glob: str) -> str:
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == n:
            out.append("/.*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = glob.find("]", i + 2)
            if j == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def parse(text: str) -> List[Rule]:
    rules: List[Rule] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        # trailing spaces are ignored unless escaped
        stripped = line.rstrip(" ")
        if stripped.endswith("\\") and len(stripped) < len(line):
            stripped += " "
        line = stripped
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        elif line.startswith(("\\!", "\\#")):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        regex = _translate(line)
        if not anchored:
            regex = "(?:.*/)?" + regex
        rules.append((re.compile(regex + r"\Z", re.DOTALL), negated, dir_only))
    return rules


def _read(path: Path) -> List[Rule]:
    try:
        return parse(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []


def work_tree_root(start: Path) -> Optional[Path]:
    """The closest directory at or above ``start`` holding ``.git`` (a directory,
    or a file in worktrees and submodules)."""
    try:
        here = start.resolve()
    except (OSError, RuntimeError):
        return None
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory
    return None


class GitIgnore:
    """Answers "is this path ignored?" for paths met while walking down."""

    def __init__(self) -> None:
        self._rules: Dict[Path, List[Tuple[Path, List[Rule]]]] = {}
        self._roots: Dict[Path, Optional[Path]] = {}
        self._by_spelling: Dict[Path, List[Tuple[Path, List[Rule]]]] = {}

    def _chain(self, directory: Path) -> List[Tuple[Path, List[Rule]]]:
        """(base, rules) for every ignore file that applies inside ``directory``,
        outermost first."""
        found = self._rules.get(directory)
        if found is not None:
            return found
        root = self._root(directory)
        if root is None:
            chain: List[Tuple[Path, List[Rule]]] = []
        elif directory == root:
            chain = []
            exclude = _read(root / ".git" / "info" / "exclude") if (root / ".git").is_dir() else []
            if exclude:
                chain.append((root, exclude))
            own = _read(root / ".gitignore")
            if own:
                chain.append((root, own))
        else:
            chain = list(self._chain(directory.parent))
            own = _read(directory / ".gitignore")
            if own:
                chain.append((directory, own))
        self._rules[directory] = chain
        return chain

    def _root(self, directory: Path) -> Optional[Path]:
        """``directory`` is resolved; one stat per directory, the rest is cached."""
        if directory not in self._roots:
            if (directory / ".git").exists():
                root: Optional[Path] = directory
            elif directory.parent == directory:
                root = None
            else:
                root = self._root(directory.parent)
            self._roots[directory] = root
        return self._roots[directory]

    def _chain_of(self, directory: Path) -> List[Tuple[Path, List[Rule]]]:
        """The chain for a directory as the walk spells it (resolved once)."""
        chain = self._by_spelling.get(directory)
        if chain is None:
            try:
                chain = self._chain(directory.resolve())
            except (OSError, RuntimeError):
                chain = []
            self._by_spelling[directory] = chain
        return chain

    def ignored(self, path: Path, is_dir: bool) -> bool:
        chain = self._chain_of(path.parent)
        if not chain:  # outside a work tree, or no ignore file applies: no syscall per file
            return False
        try:
            path = path.parent.resolve() / path.name
        except (OSError, RuntimeError):
            return False
        verdict = False
        for base, rules in chain:
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            for regex, negated, dir_only in rules:
                if dir_only and not is_dir:
                    continue
                if regex.match(rel):
                    verdict = not negated
        return verdict
