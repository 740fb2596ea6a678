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


def rules_by_code() -> Dict[str, Type[Rule]]:
    return {r.code: r for r in all_rules()}


def known_code(selector: str) -> bool:
    """A selector is ALL, a code, or a prefix of at least one code (``NL00``)."""
    if selector == ALL:
        return True
    codes = [r.code for r in all_rules()] + ["NL000"]
    return any(code.startswith(selector) for code in codes)


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
