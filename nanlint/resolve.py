"""Cheap import-alias resolution.

libcst's qualified-name metadata costs several times the parse itself, and the
rules only need to know which local names stand for a handful of modules
(``torch``, ``torch.nn.functional``, ``math``, ``numpy``...). ``Names`` records
every import binding it is shown and resolves dotted expressions through them:

    import torch as T                  T.exp        -> torch.exp
    import torch.nn.functional as F    F.softmax    -> torch.nn.functional.softmax
    from torch import exp              exp          -> torch.exp
    from torch.nn import functional    functional.normalize -> torch.nn.functional.normalize

Scoping is deliberately ignored: an import anywhere in the file binds the name
for the whole file (imports inside functions are common in PyTorch code, and
rebinding a module alias to something else is rare).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import libcst as cst


def dotted_name(node: cst.BaseExpression) -> Optional[str]:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return None


class Names:
    """Local name -> fully qualified name, from the file's imports."""

    __slots__ = ("bindings",)

    def __init__(self) -> None:
        self.bindings: Dict[str, str] = {}

    # -- building -------------------------------------------------------
    def add_import(self, node: cst.Import) -> None:
        for alias in node.names:
            full = dotted_name(alias.name)
            if full is None:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.bindings[alias.asname.name.value] = full
            else:
                head = full.split(".", 1)[0]
                self.bindings[head] = head

    def add_import_from(self, node: cst.ImportFrom) -> None:
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = dotted_name(node.module)
        if module is None:
            return
        for alias in node.names:
            if not isinstance(alias.name, cst.Name):
                continue
            local = alias.name.value
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self.bindings[local] = f"{module}.{alias.name.value}"

    def scan(self, statements: Iterable[cst.CSTNode]) -> None:
        """Record the imports among module-level statements, looking into
        ``if``/``try``/``with`` blocks but not into functions or classes."""
        for stmt in statements:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, cst.Import):
                        self.add_import(small)
                    elif isinstance(small, cst.ImportFrom):
                        self.add_import_from(small)
            elif isinstance(stmt, (cst.If, cst.Try, cst.With)):
                self.scan(_block(stmt.body))
                for extra in _compound_tails(stmt):
                    self.scan(_block(extra.body))

    # -- querying -------------------------------------------------------
    def resolve(self, node: cst.BaseExpression) -> Optional[str]:
        """Fully qualified name of a Name/Attribute chain whose head is an import."""
        parts = []
        while isinstance(node, cst.Attribute):
            parts.append(node.attr.value)
            node = node.value
        if not isinstance(node, cst.Name):
            return None
        base = self.bindings.get(node.value)
        if base is None:
            return None
        parts.append(base)
        return ".".join(reversed(parts))

    def alias_for(self, module: str) -> Optional[str]:
        """The local name bound to ``module`` itself (``T`` for ``import torch as T``)."""
        if self.bindings.get(module.split(".")[-1]) == module:
            return module.split(".")[-1]
        if "." not in module and self.bindings.get(module) == module:
            return module
        for local, full in sorted(self.bindings.items()):
            if full == module:
                return local
        return None

    def is_module_like(self, node: cst.BaseExpression) -> bool:
        """True when ``node`` resolves through an import (so ``node.f()`` is not a method call)."""
        return self.resolve(node) is not None


def _block(body: cst.BaseSuite) -> Tuple[cst.CSTNode, ...]:
    if isinstance(body, cst.IndentedBlock):
        return tuple(body.body)
    return ()


def _compound_tails(stmt: cst.CSTNode) -> Tuple[cst.CSTNode, ...]:
    tails = []
    if isinstance(stmt, cst.If):
        orelse = stmt.orelse
        while orelse is not None:
            tails.append(orelse)
            orelse = orelse.orelse if isinstance(orelse, cst.If) else None
    elif isinstance(stmt, cst.Try):
        tails.extend(stmt.handlers)
        if stmt.orelse is not None:
            tails.append(stmt.orelse)
        if stmt.finalbody is not None:
            tails.append(stmt.finalbody)
    return tuple(tails)
