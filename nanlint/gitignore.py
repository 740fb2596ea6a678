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

from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

# -- a glob matcher in linear time --------------------------------------------------------
#
# Git's wildmatch semantics, on the path's UTF-8 bytes as git does. The pattern
# becomes a small NFA that is run as a lazily built DFA: every byte of a path
# costs one table lookup, whatever the pattern (``*a*a*a*a*a*a*a*b`` included,
# which backtracking regex engines take exponential time on).

_SLASH = ord("/")
_LITERAL, _ONE, _CLASS, _STAR, _ANY, _DIRS = range(6)
#: a token: (kind, byte or class predicate)
Token = Tuple[int, object]

_POSIX: Dict[bytes, Callable[[int], bool]] = {
    b"alnum": lambda c: chr(c).isalnum() and c < 128,
    b"alpha": lambda c: chr(c).isalpha() and c < 128,
    b"blank": lambda c: c in b" \t",
    b"cntrl": lambda c: c < 32 or c == 127,
    b"digit": lambda c: 48 <= c <= 57,
    b"graph": lambda c: 33 <= c <= 126,
    b"lower": lambda c: 97 <= c <= 122,
    b"print": lambda c: 32 <= c <= 126,
    b"punct": lambda c: 33 <= c <= 126 and not chr(c).isalnum(),
    b"space": lambda c: c in b" \t\n\r\v\f",
    b"upper": lambda c: 65 <= c <= 90,
    b"xdigit": lambda c: chr(c) in "0123456789abcdefABCDEF",
}


class InvalidPattern(ValueError):
    """Git never matches such a pattern (an unclosed ``[``, a trailing ``\\``)."""


def _class(p: bytes, i: int) -> Tuple[Callable[[int], bool], int]:
    """The predicate of the bracket expression opening at ``p[i]`` and the index after it."""
    i += 1
    negated = i < len(p) and p[i] in b"!^"
    if negated:
        i += 1
    singles = set()
    tests: List[Callable[[int], bool]] = []
    prev: Optional[int] = None
    first = True
    while True:
        if i >= len(p):
            raise InvalidPattern("unclosed [")
        c = p[i]
        if c == ord("]") and not first:
            i += 1
            break
        first = False
        if c == ord("\\"):
            i += 1
            if i >= len(p):
                raise InvalidPattern("trailing \\")
            c = p[i]
            singles.add(c)
            prev = c
        elif c == ord("-") and prev is not None and i + 1 < len(p) and p[i + 1] != ord("]"):
            i += 1
            hi = p[i]
            if hi == ord("\\"):
                i += 1
                if i >= len(p):
                    raise InvalidPattern("trailing \\")
                hi = p[i]
            lo = prev
            tests.append(lambda b, lo=lo, hi=hi: lo <= b <= hi)  # a reversed range matches nothing
            prev = None
        elif c == ord("[") and i + 1 < len(p) and p[i + 1] == ord(":"):
            close = p.find(b"]", i + 2)
            if close == -1:
                raise InvalidPattern("unclosed [")
            if close - 1 < i + 2 or p[close - 1] != ord(":"):  # no ":]": a literal "["
                singles.add(c)
                prev = c
            else:
                name = p[i + 2:close - 1]
                if name not in _POSIX:
                    raise InvalidPattern(f"unknown class [:{name.decode(errors='replace')}:]")
                tests.append(_POSIX[name])
                prev = None
                i = close
        else:
            singles.add(c)
            prev = c
        i += 1

    def member(b: int) -> bool:
        if b == _SLASH:
            return False
        return (b in singles or any(t(b) for t in tests)) != negated

    return member, i


def _tokens(p: bytes) -> List[Token]:
    out: List[Token] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == ord("*"):
            j = i
            while j < n and p[j] == ord("*"):
                j += 1
            if j - i >= 2 and (i == 0 or p[i - 1] == _SLASH) and (j == n or p[j] == _SLASH):
                if j == n:
                    out.append((_ANY, None))  # "/**" at the end: everything inside
                    i = j
                else:
                    out.append((_DIRS, None))  # "**/": zero or more directories
                    i = j + 1
            else:
                out.append((_STAR, None))  # other runs of "*" are one "*"
                i = j
        elif c == ord("?"):
            out.append((_ONE, None))
            i += 1
        elif c == ord("["):
            member, i = _class(p, i)
            out.append((_CLASS, member))
        elif c == ord("\\"):
            if i + 1 >= n:
                raise InvalidPattern("trailing \\")
            out.append((_LITERAL, p[i + 1]))
            i += 2
        else:
            out.append((_LITERAL, c))
            i += 1
    return out


class Glob:
    """A compiled gitignore pattern; ``match(path)`` is True when it matches
    the whole path (relative to the pattern's base), or its last component
    for a pattern without a slash."""

    MAX_STATES = 4096  # the DFA is a cache: past this many states it starts afresh

    def __init__(self, pattern: str, basename_only: bool) -> None:
        try:
            self._tokens: Optional[List[Token]] = _tokens(pattern.encode("utf-8", "surrogateescape"))
        except InvalidPattern:
            self._tokens = None  # git matches nothing with it: neither do we
        self._basename_only = basename_only
        # fast paths for the common shapes: "name" and "*.ext"
        self._literal: Optional[bytes] = None
        self._suffix: Optional[bytes] = None
        if self._tokens is not None:
            kinds = [kind for kind, _ in self._tokens]
            if all(kind == _LITERAL for kind in kinds):
                self._literal = bytes(arg for _, arg in self._tokens)  # type: ignore[misc]
            elif kinds[0] == _STAR and all(kind == _LITERAL for kind in kinds[1:]):
                self._suffix = bytes(arg for _, arg in self._tokens[1:])  # type: ignore[misc]
        self._reset()

    def _reset(self) -> None:
        self._ids: Dict[FrozenSet[int], int] = {}
        self._sets: List[FrozenSet[int]] = []
        self._next: Dict[Tuple[int, int], int] = {}
        if self._tokens is not None:
            self._start = self._id(self._closure({0}))

    def _closure(self, states) -> FrozenSet[int]:
        tokens = self._tokens
        todo, seen = list(states), set(states)
        while todo:
            s = todo.pop()
            if s < len(tokens) and tokens[s][0] in (_STAR, _ANY, _DIRS) and s + 1 not in seen:
                seen.add(s + 1)
                todo.append(s + 1)
        return frozenset(seen)

    def _id(self, states: FrozenSet[int]) -> int:
        found = self._ids.get(states)
        if found is None:
            found = len(self._sets)
            self._sets.append(states)
            self._ids[states] = found
        return found

    def _step(self, state: int, byte: int) -> int:
        tokens = self._tokens
        out = set()
        for s in self._sets[state]:
            if s == len(tokens):
                continue
            kind, arg = tokens[s]
            if kind == _LITERAL:
                if byte == arg:
                    out.add(s + 1)
            elif kind == _ONE:
                if byte != _SLASH:
                    out.add(s + 1)
            elif kind == _CLASS:
                if arg(byte):  # type: ignore[operator]
                    out.add(s + 1)
            elif kind == _STAR:
                if byte != _SLASH:
                    out.add(s)
            elif kind == _ANY:
                out.add(s)
            else:  # _DIRS: anything, then a "/" ends it
                out.add(s)
                if byte == _SLASH:
                    out.add(s + 1)
        return self._id(self._closure(out))

    def match(self, path: str) -> bool:
        if self._tokens is None:
            return False
        if len(self._sets) > self.MAX_STATES:  # one match adds at most one state per byte
            self._reset()
        if self._basename_only:
            path = path.rpartition("/")[2]
        data = path.encode("utf-8", "surrogateescape")
        if self._literal is not None:
            return data == self._literal
        if self._suffix is not None:
            return data.endswith(self._suffix) and b"/" not in data[:len(data) - len(self._suffix)]
        state = self._start
        table = self._next
        for byte in data:
            nxt = table.get((state, byte))
            if nxt is None:
                nxt = table[state, byte] = self._step(state, byte)
            state = nxt
            if not self._sets[state]:
                return False
        return len(self._tokens) in self._sets[state]


# (matcher of the path relative to the pattern's base, negated, directories only)
Rule = Tuple[Glob, bool, bool]


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
        rules.append((Glob(line.lstrip("/"), basename_only=not anchored), negated, dir_only))
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
