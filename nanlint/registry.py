"""Rule discovery and selection.

Every module in the ``nanlint.rules`` package (the ``rules/`` folder) is
imported and its ``Rule`` subclasses with a code are collected: adding a rule is
adding a file there.

Selecting rules, checking a configuration and building the cache key need only
each rule's metadata (:class:`RuleInfo`), and importing the rules imports
libcst, which is most of a warm run's start-up. So the metadata also lives in
``nanlint/_rule_index.py``, written by ``python -m nanlint.registry`` and used
only while the digest it records matches the rule files: a stale index is
ignored (the rules are imported instead), never trusted, and a test fails
until it is rewritten.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from .finding import SYNTAX_ERROR_CODE, SYNTAX_ERROR_NAME

if TYPE_CHECKING:
    from .dtypes import DtypeFacts
    from .rule import Rule

CODE_RE = re.compile(r"^NL\d{3}$")
ALL = "ALL"
INDEX_MODULE = "_rule_index"


@lru_cache(maxsize=1)
def all_rules() -> Tuple[Type["Rule"], ...]:
    import nanlint.rules as package

    from .rule import Rule

    found: Dict[str, Type[Rule]] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Rule)
                and value is not Rule
                and value.code
                and value.__module__ == module.__name__
            ):
                if not CODE_RE.match(value.code):
                    raise RuntimeError(f"rule {value.__name__} has a malformed code {value.code!r}")
                if value.code in found:
                    raise RuntimeError(f"two rules claim {value.code}")
                found[value.code] = value
    return tuple(found[c] for c in sorted(found))


# -- metadata without importing the rules ----------------------------------------


@dataclass(frozen=True)
class RuleInfo:
    """What selecting and configuring a rule needs (see :class:`nanlint.rule.Rule`)."""

    code: str
    name: str
    default_enabled: bool
    float16_only: bool
    options: Mapping[str, Any]

    @classmethod
    def of(cls, rule: Type["Rule"]) -> "RuleInfo":
        return cls(rule.code, rule.name, rule.default_enabled, rule.float16_only, dict(rule.options))

    def active(self, dtypes: Sequence["DtypeFacts"]) -> bool:
        """Whether the rule can report anything for these target dtypes (as ``Rule.active``)."""
        from .dtypes import targets_float16

        return not self.float16_only or targets_float16(dtypes)


SYNTAX_ERROR_INFO = RuleInfo(SYNTAX_ERROR_CODE, SYNTAX_ERROR_NAME, True, False, {})


def rules_digest() -> str:
    """sha256 of what the metadata is read from: the rule files and ``rule.py``
    (where the defaults of the metadata live)."""
    import nanlint.rules as package

    h = hashlib.sha256()
    files = [os.path.join(os.path.dirname(__file__), "rule.py")]
    for folder in package.__path__:
        files.extend(os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".py"))
    for path in files:
        with open(path, "rb") as handle:
            h.update(os.path.basename(path).encode() + b"\0" + handle.read() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def rule_infos() -> Tuple[RuleInfo, ...]:
    """Every rule's metadata: from the index when it is current, else from the rules."""
    try:
        index = importlib.import_module(f"{__package__}.{INDEX_MODULE}")
    except ImportError:
        index = None
    if index is not None and getattr(index, "DIGEST", None) == rules_digest():
        return tuple(RuleInfo(**entry) for entry in index.RULES)
    return tuple(RuleInfo.of(r) for r in all_rules())


def index_text() -> str:
    """The text of ``_rule_index.py`` for the rules as they are now."""
    entries = "".join(f"    {RuleInfo.of(r).__dict__!r},\n" for r in all_rules())
    return (
        '"""Every rule\'s metadata, so that selecting rules does not import them.\n\n'
        "Written by `python -m nanlint.registry` from the rule files; do not edit.\n"
        'Used only while DIGEST matches them (see nanlint/registry.py)."""\n\n'
        f"DIGEST = {rules_digest()!r}\n\n"
        f"RULES = (\n{entries})\n"
    )


def load(infos: Sequence[RuleInfo]) -> List[Type["Rule"]]:
    """The rule classes of ``infos``, in the same order."""
    by_code = {r.code: r for r in all_rules()}
    return [by_code[i.code] for i in infos]


@lru_cache(maxsize=1)
def syntax_error_rule() -> Type["Rule"]:
    """NL000's documentation, as a rule class (defined on first use: a rule
    class needs libcst)."""
    from .rule import Rule

    class SyntaxErrorRule(Rule):
        """## What it does
        Reports a file, or a notebook cell, that Python cannot parse: Python 2
        syntax, an unfinished edit, null bytes, syntax newer than the parser knows.
        Syntax newer than the running Python but known to the parser (PEP 695
        generics `class Pipeline[T]:` on Python 3.11) is checked, not reported.

        ## Why is this bad?
        No rule can look inside code that does not parse, so every hazard in it
        goes unreported. NL000 is a pseudo-rule: the engine reports it, at Python's
        own position for the error. It is on whatever `select` says, and is turned
        off only by ignoring it (`--ignore NL000`, `ignore`, `per-file-ignores`),
        e.g. for teaching notebooks with deliberately broken cells.

        ## Example
        ```python
        print "loss", loss
        ```

        ## Use instead
        ```python
        print("loss", loss)
        ```

        ## Fix safety
        There is no fix.
        """

        code = SYNTAX_ERROR_CODE
        name = SYNTAX_ERROR_NAME
        summary = "a file or notebook cell that does not parse: no rule can check it (ignore it to silence)"

    return SyntaxErrorRule


def documented_rules() -> Tuple[Type["Rule"], ...]:
    """NL000 (the pseudo-rule for syntax errors) and every rule."""
    return (syntax_error_rule(),) + all_rules()


def rules_by_code() -> Dict[str, Type["Rule"]]:
    return {r.code: r for r in documented_rules()}


def infos_by_code() -> Dict[str, RuleInfo]:
    """NL000's and every rule's metadata, by code (imports no rule)."""
    return {i.code: i for i in (SYNTAX_ERROR_INFO,) + rule_infos()}


def known_code(selector: str) -> bool:
    """A selector is ALL, a code, or a prefix of at least one code (``NL00``)."""
    if selector == ALL:
        return True
    return any(code.startswith(selector) for code in infos_by_code())


def _specificity(selector: str, code: str) -> int:
    """-1 when the selector does not match the code, else how specific it is."""
    if selector == ALL:
        return 0
    if code.startswith(selector):
        return len(selector)
    return -1


def select_rules(
    select: Optional[Sequence[str]],
    extend_select: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> List[Type["Rule"]]:
    """The classes of the rules :func:`select_infos` selects."""
    return load(select_infos(select, extend_select, ignore))


def select_infos(
    select: Optional[Sequence[str]],
    extend_select: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> List[RuleInfo]:
    """ruff-style selection: the most specific matching selector decides; between
    a select and an ignore of equal specificity the ignore wins. ``select=None``
    means the default selection (every rule not marked opt-in)."""
    chosen = []
    for rule in rule_infos():
        best_on = -1
        if select is None:
            best_on = 0 if rule.default_enabled else -1
        else:
            best_on = max((_specificity(s, rule.code) for s in select), default=-1)
        best_on = max([best_on] + [_specificity(s, rule.code) for s in extend_select])
        best_off = max((_specificity(s, rule.code) for s in ignore), default=-1)
        if best_on >= 0 and best_on > best_off:
            chosen.append(rule)
    return chosen


def reports_syntax_errors(
    select: Optional[Sequence[str]],
    extend_select: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> bool:
    """Whether NL000 is reported: it is selected by default whatever `select`
    says, so only an ignore at least as specific as every selector of it
    turns it off (`--ignore NL000`, `--ignore ALL`)."""
    code = SYNTAX_ERROR_CODE
    best_on = max([0] + [_specificity(s, code) for s in (*(select or ()), *extend_select)])
    best_off = max((_specificity(s, code) for s in ignore), default=-1)
    return best_on > best_off


if __name__ == "__main__":
    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{INDEX_MODULE}.py")
    with open(target, "w", encoding="utf-8") as out:
        out.write(index_text())
    print(f"wrote {target}", file=sys.stderr)
