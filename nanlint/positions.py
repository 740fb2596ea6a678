"""Positions for the few nodes that need one.

libcst's ``PositionProvider`` records a range for every node of the file, which
costs about four times the parse. nanlint needs positions only for the nodes a
rule reports or edits, so this runs libcst's own code generator with a state
that watches just those nodes, and stops as soon as the last one has been
generated. Ranges are computed from token counts at the end, so the per-token
cost is a list append, as in plain code generation.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from contextlib import contextmanager
from itertools import accumulate
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

import libcst as cst
from libcst._nodes.internal import CodegenState

from .noqa import NEWLINE_RE, line_starts  # noqa: F401 (re-exported)

# (line, column): 1-based line, 0-based column, as libcst counts them.
Pos = Tuple[int, int]


class Range:
    __slots__ = ("start", "end", "inner_start", "inner_end")

    def __init__(self, start: Pos, end: Pos, inner_start: Pos, inner_end: Pos) -> None:
        #: whitespace-inclusive range: everything the node generates (parentheses included)
        self.start = start
        self.end = end
        #: syntactic range: without owned leading blank lines/indentation and
        #: without the node's own parentheses (what a user calls "the expression")
        self.inner_start = inner_start
        self.inner_end = inner_end


class _Done(Exception):
    pass


class _WatchingState(CodegenState):
    """A code generator state that records token indices for watched nodes only."""

    def __init__(self, module: cst.Module, watched: Set[cst.CSTNode]) -> None:
        super().__init__(
            default_indent=module.default_indent, default_newline=module.default_newline
        )
        self.watched = watched
        self.remaining = len(watched)
        self.opened: Dict[cst.CSTNode, int] = {}
        self.outer: Dict[cst.CSTNode, Tuple[int, int]] = {}
        self.inner: Dict[cst.CSTNode, Tuple[int, int]] = {}
        self.helpers: Set[cst.CSTNode] = set()

    def before_codegen(self, node: cst.CSTNode) -> None:
        if node in self.watched or node in self.helpers:
            self.opened[node] = len(self.tokens)

    def after_codegen(self, node: cst.CSTNode) -> None:
        if node in self.watched:
            self.outer[node] = (self.opened.pop(node), len(self.tokens))
            self.remaining -= 1
            if self.remaining == 0:
                raise _Done
        elif node in self.helpers:
            self.outer[node] = (self.opened.pop(node), len(self.tokens))

    @contextmanager
    def record_syntactic_position(
        self,
        node: cst.CSTNode,
        *,
        start_node: Optional[cst.CSTNode] = None,
        end_node: Optional[cst.CSTNode] = None,
    ) -> Iterator[None]:
        if node not in self.watched:
            yield
            return
        for extra in (start_node, end_node):
            if extra is not None:
                self.helpers.add(extra)
        start = len(self.tokens)
        yield
        end = len(self.tokens)
        if start_node is not None and start_node in self.outer:
            start = self.outer[start_node][0]
        if end_node is not None and end_node in self.outer:
            end = self.outer[end_node][1]
        self.inner[node] = (start, end)


#: libcst generates code recursively, a few Python frames per tree level: enough
#: for the deepest tree the engine accepts (engine.MAX_TREE_DEPTH levels plus
#: brackets), well within the native stack
CODEGEN_RECURSION_LIMIT = 20_000


@contextmanager
def deep_codegen() -> Iterator[None]:
    """Let libcst's recursive code generation reach the accepted depth."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, CODEGEN_RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def offset_to_pos(starts: List[int], offset: int) -> Pos:
    line = bisect_right(starts, offset)
    return line, offset - starts[line - 1]


def compute_ranges(
    module: cst.Module, nodes: Iterable[cst.CSTNode], starts: Optional[List[int]] = None
) -> Dict[cst.CSTNode, Range]:
    """Ranges for ``nodes`` (which must belong to ``module``)."""
    watched = set(nodes)
    if not watched:
        return {}
    state = _generate(module, module, watched)
    if starts is None:
        starts = line_starts("".join(state.tokens))
    result: Dict[cst.CSTNode, Range] = {}
    _collect(state, watched, starts, 0, result)
    return result


def _generate(module: cst.Module, root: cst.CSTNode, watched: Set[cst.CSTNode]) -> "_WatchingState":
    """Generate ``root``'s code (the module or one of its top-level
    statements) until the last watched node is done, recording where each is."""
    state = _WatchingState(module, watched)
    try:
        with deep_codegen():
            root._codegen(state)
    except _Done:
        pass
    return state


def _collect(state: "_WatchingState", watched: Set[cst.CSTNode], starts: List[int], base: int,
             result: Dict[cst.CSTNode, Range]) -> None:
    """The ranges of the watched nodes a generation recorded, its text
    starting at offset ``base`` of the source."""
    offsets = [base]
    offsets.extend(base + o for o in accumulate(map(len, state.tokens)))
    for node, (a, b) in state.outer.items():
        if node not in watched:
            continue
        ia, ib = state.inner.get(node, (a, b))
        result[node] = Range(
            offset_to_pos(starts, offsets[a]),
            offset_to_pos(starts, offsets[b]),
            offset_to_pos(starts, offsets[ia]),
            offset_to_pos(starts, offsets[ib]),
        )


def statement_lines(module: cst.Module, tree) -> Optional[List[int]]:
    """The 1-based line where each of ``module.body``'s statements begins,
    leading blank and comment lines included, read from Python's own syntax
    tree ``tree`` of the same text (None when the two do not line up). A
    top-level statement always begins a line, so with these lines a reported
    node's position needs the code of its own statement only, not of
    everything before it."""
    body = getattr(tree, "body", None)
    if body is None:
        return None
    out: List[int] = []
    j = 0
    for stmt in module.body:
        if j >= len(body):
            return None
        first = body[j]
        line = first.lineno
        for deco in getattr(first, "decorator_list", ()):
            line = min(line, deco.lineno)
        if isinstance(stmt, cst.SimpleStatementLine):
            j += len(stmt.body)
            leading = len(stmt.leading_lines)
        else:
            j += 1
            leading = len(getattr(stmt, "leading_lines", ()))
        out.append(line - leading)
    return out if j == len(body) else None


def compute_statement_ranges(
    module: cst.Module,
    nodes: Iterable[cst.CSTNode],
    starts: List[int],
    text: str,
    owners: Dict[cst.CSTNode, int],
    lines: List[int],
) -> Optional[Dict[cst.CSTNode, Range]]:
    """What :func:`compute_ranges` gives, generating only the top-level
    statements that hold ``nodes``: ``owners`` maps each node to the index of
    its statement in ``module.body`` and ``lines`` gives where each statement
    begins (:func:`statement_lines`). The code generated for each statement
    is compared with ``text`` at that place, so a wrong start is never used:
    the answer is None and the caller generates the module."""
    groups: Dict[int, Set[cst.CSTNode]] = {}
    for node in nodes:
        index = owners.get(node)
        if index is None:
            return None
        groups.setdefault(index, set()).add(node)
    result: Dict[cst.CSTNode, Range] = {}
    for index, watched in groups.items():
        line = lines[index]
        if not 1 <= line <= len(starts):
            return None
        base = starts[line - 1]
        state = _generate(module, module.body[index], watched)
        generated = "".join(state.tokens)
        if text[base:base + len(generated)] != generated:
            return None
        _collect(state, watched, starts, base, result)
    return result


class NodeText:
    """The source text of nodes, as ``module.code_for_node`` gives it, at a
    bounded total cost.

    Generating a node's code costs its size, so asking for each link of a
    long chain (rules read a call's receiver) costs the chain's length
    squared: 400 `.masked_fill(m, -1e9)` links took 17 s. Once the text
    generated exceeds a few times the module's size, the text of every
    expression is recorded in one pass over the module and sliced from then
    on. Statements keep their own generation: their text depends on the
    enclosing indentation."""

    BUDGET_FACTOR = 4

    def __init__(self, module: cst.Module, size: int) -> None:
        self.module = module
        self.budget = self.BUDGET_FACTOR * max(size, 1)
        self.text: Optional[str] = None
        self.spans: Dict[cst.CSTNode, Tuple[int, int]] = {}

    def __call__(self, node: cst.CSTNode) -> str:
        if self.budget <= 0 and isinstance(node, cst.BaseExpression):
            if self.text is None:
                self._record()
            span = self.spans.get(node)
            if span is not None:
                text = self.text[span[0]:span[1]]  # type: ignore[index]
                if "\n" not in text and "\r" not in text:
                    return text  # (a node's own generation dedents its continuation lines)
        with deep_codegen():
            code = self.module.code_for_node(node)
        self.budget -= len(code)
        return code

    def _record(self) -> None:
        from .engine import subtree

        expressions = {n for n in subtree(self.module) if isinstance(n, cst.BaseExpression)}
        state = _WatchingState(self.module, expressions)
        state.remaining = -1  # never stop early
        with deep_codegen():
            self.module._codegen(state)
        offsets = [0]
        offsets.extend(accumulate(map(len, state.tokens)))
        self.text = "".join(state.tokens)
        self.spans = {node: (offsets[a], offsets[b]) for node, (a, b) in state.outer.items() if node in expressions}
