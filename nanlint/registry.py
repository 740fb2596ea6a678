"""Rule discovery and selection.

Every module in the ``nanlint.rules`` package (the ``rules/`` folder) is
imported and its ``Rule`` subclasses with a code are collected: adding a rule is
adding a file there.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Type

from .engine import SYNTAX_ERROR_CODE, SYNTAX_ERROR_NAME
from .rule import Rule

CODE_RE = re.compile(r"^NL\d{3}$")
ALL = "ALL"


@lru_cache(maxsize=1)
def all_rules() -> Tuple[Type[Rule], ...]:
    import nanlint.rules as package

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


def documented_rules() -> Tuple[Type[Rule], ...]:
    """NL000 (the pseudo-rule for syntax errors) and every rule."""
    return (SyntaxErrorRule,) + all_rules()


def rules_by_code() -> Dict[str, Type[Rule]]:
    return {r.code: r for r in documented_rules()}


def known_code(selector: str) -> bool:
    """A selector is ALL, a code, or a prefix of at least one code (``NL00``)."""
    if selector == ALL:
        return True
    return any(r.code.startswith(selector) for r in documented_rules())


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
) -> List[Type[Rule]]:
    """ruff-style selection: the most specific matching selector decides; between
    a select and an ignore of equal specificity the ignore wins. ``select=None``
    means the default selection (every rule not marked opt-in)."""
    chosen = []
    for rule in all_rules():
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
    code = SyntaxErrorRule.code
    best_on = max([0] + [_specificity(s, code) for s in (*(select or ()), *extend_select)])
    best_off = max((_specificity(s, code) for s in ignore), default=-1)
    return best_on > best_off
