"""Parse a unit of source once, run the selected rules in one traversal, apply
``# noqa``, and return findings. No I/O: the caller hands over the text."""

from __future__ import annotations

import dataclasses
import gc
import re
import sys
from functools import lru_cache
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Type, Union

import libcst as cst

from .dtypes import DtypeFacts
from .finding import SYNTAX_ERROR_CODE, SYNTAX_ERROR_NAME, Edit, Finding, Fix
from .noqa import NOQA_RE, is_suppressed, noqa_codes, physical_lines, unknown_noqa_codes  # noqa: F401 (re-exported)
from .positions import Range, compute_ranges, compute_statement_ranges, deep_codegen, line_starts, statement_lines
from .resolve import Names
from .rule import Context, FixSpec, Report, Rule


# -- traversal ---------------------------------------------------------------

# Fields that hold only whitespace, comments, brackets or operator tokens.
_SKIPPED_FIELDS = frozenset(
    {
        "lpar", "rpar", "lbracket", "rbracket", "lbrace", "rbrace", "comma",
        "semicolon", "equal", "colon", "dot", "operator", "star", "walrus",
        "asynchronous", "header", "footer", "leading_lines",
        "lines_after_decorators", "trailing_whitespace", "first_colon",
        "second_colon", "posonly_ind", "whitespace", "default_indent",
        "default_newline", "encoding", "has_trailing_newline",
    }
)

# Classes whose dataclass field order differs from source order.
_SOURCE_ORDER = {
    "FunctionDef": ("decorators", "name", "type_parameters", "params", "returns", "body"),
    "ClassDef": ("decorators", "name", "type_parameters", "bases", "keywords", "body"),
    "IfExp": ("body", "test", "orelse"),
    "Arg": ("keyword", "value"),
    "ExceptHandler": ("type", "name", "body"),
    "Parameters": ("posonly_params", "params", "star_arg", "kwonly_params", "star_kwarg"),
    "MatchCase": ("pattern", "guard", "body"),
    "MatchAs": ("pattern", "name"),
}

_FIELDS_CACHE: Dict[type, Tuple[str, ...]] = {}


def _child_fields(cls: type) -> Tuple[str, ...]:
    names = _FIELDS_CACHE.get(cls)
    if names is None:
        order = _SOURCE_ORDER.get(cls.__name__)
        if order is not None:
            names = order
        else:
            names = tuple(
                f.name
                for f in dataclasses.fields(cls)
                if f.name not in _SKIPPED_FIELDS and not f.name.startswith("whitespace")
            )
        _FIELDS_CACHE[cls] = names
    return names


def children(node: cst.CSTNode) -> List[cst.CSTNode]:
    """The node's children in source order, without whitespace, comments,
    parentheses and operator tokens (what the engine's traversal visits).
    Several times cheaper than libcst's ``node.children``."""
    out: List[cst.CSTNode] = []
    is_node = _IS_NODE
    for name in _FIELDS_CACHE.get(type(node)) or _child_fields(type(node)):
        value = getattr(node, name)
        kind = type(value)
        if kind is tuple or kind is list:
            for item in value:
                known = is_node.get(type(item))
                if known is None:
                    known = _is_node_type(type(item))
                if known:
                    out.append(item)
        else:
            known = is_node.get(kind)
            if known is None:
                known = _is_node_type(kind)
            if known:
                out.append(value)
    return out


#: type -> whether it is a libcst node class. A dict lookup replaces
#: isinstance(value, cst.CSTNode), which goes through ABCMeta on every field.
_IS_NODE: Dict[type, bool] = {}


def _is_node_type(kind: type) -> bool:
    known = _IS_NODE[kind] = issubclass(kind, cst.CSTNode)
    return known


def iter_tree(root: cst.CSTNode, kids: Optional[Dict[cst.CSTNode, List[cst.CSTNode]]] = None,
              ) -> Iterator[Tuple[cst.CSTNode, Optional[cst.CSTNode]]]:
    """(node, parent) for every node under ``root`` in source order, without
    recursion; each node's children list is kept in ``kids`` when given."""
    stack: List[Tuple[cst.CSTNode, Optional[cst.CSTNode]]] = [(root, None)]
    while stack:
        node, parent = stack.pop()
        yield node, parent
        below = children(node)
        if kids is not None:
            kids[node] = below
        stack.extend((child, node) for child in reversed(below))


def subtree(root: cst.CSTNode, limit: Optional[int] = None) -> Iterator[cst.CSTNode]:
    """``root`` and every node under it in source order, without recursion;
    at most ``limit`` nodes when given (a cheap look into a large expression)."""
    stack = [root]
    seen = 0
    while stack and (limit is None or seen < limit):
        node = stack.pop()
        seen += 1
        yield node
        stack.extend(reversed(children(node)))


def scope_nodes(root: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The nodes under ``root`` (a function, its body, a module), without
    entering nested functions, classes or lambdas (nor yielding them)."""
    stack = list(children(root))
    while stack:
        node = stack.pop()
        if type(node) in _NESTED_SCOPES:
            continue
        yield node
        stack.extend(children(node))


_NESTED_SCOPES = frozenset({cst.FunctionDef, cst.ClassDef, cst.Lambda})


Handler = Callable[[cst.CSTNode], Any]


def walk(
    root: cst.CSTNode,
    on_visit: Mapping[type, Sequence[Handler]],
    on_leave: Mapping[type, Sequence[Handler]],
    kids: Optional[Mapping[cst.CSTNode, List[cst.CSTNode]]] = None,
) -> None:
    """Depth-first, source-order traversal without recursion (deeply nested
    expressions must not hit Python's recursion limit). ``kids``: children
    lists already computed (by the shared analysis, once a rule asked for it)."""
    stack: List[Any] = [root]
    pop = stack.pop
    push = stack.append
    leave_marker = _LEAVE
    known = (kids if kids is not None else {}).get
    while stack:
        node = pop()
        if node is leave_marker:
            node = pop()
            for handler in on_leave[type(node)]:
                handler(node)
            continue
        cls = type(node)
        handlers = on_visit.get(cls)
        if handlers:
            for handler in handlers:
                handler(node)
        if cls in on_leave:
            push(node)
            push(leave_marker)
        below = known(node)
        if below is None:
            below = children(node)
            if below:
                below.reverse()
                stack.extend(below)
        elif below:
            stack.extend(reversed(below))


_LEAVE = object()

_HANDLER_CACHE: Dict[type, List[Tuple[str, type, str]]] = {}


def _rule_handlers(rule_cls: Type[Rule]) -> List[Tuple[str, type, str]]:
    """[(kind, libcst class, method name)] for a rule class's visit_/leave_ methods."""
    found = _HANDLER_CACHE.get(rule_cls)
    if found is None:
        found = []
        for attr in sorted(dir(rule_cls)):
            for kind in ("visit_", "leave_"):
                if attr.startswith(kind):
                    node_cls = getattr(cst, attr[len(kind):], None)
                    if isinstance(node_cls, type) and issubclass(node_cls, cst.CSTNode):
                        found.append((kind, node_cls, attr))
                    else:
                        raise TypeError(
                            f"{rule_cls.__name__}.{attr}: {attr[len(kind):]} is not a libcst node class"
                        )
        _HANDLER_CACHE[rule_cls] = found
    return found


# -- linting ---------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    findings: List[Finding]
    #: internal errors (a rule crashed); messages, never tracebacks for the user
    errors: List[str]


def parse(source: str) -> cst.Module:
    """libcst's parse without its per-node validation. The checks in
    ``CSTNode._validate`` guard trees built by hand (a missing space between
    keywords, unbalanced parentheses); the parser's own output satisfies them
    by construction, and validating it is about a sixth of the parse time
    (libcst's own comment on ``__post_init__`` says as much). Validation is
    back on for every node built after the parse (the fixes' new nodes)."""
    base = cst.CSTNode
    saved = base.__dict__["__post_init__"]
    base.__post_init__ = _unvalidated  # type: ignore[method-assign]
    try:
        return cst.parse_module(source)
    finally:
        base.__post_init__ = saved  # type: ignore[method-assign]


def _unvalidated(self: cst.CSTNode) -> None:
    pass


def _identity_hash() -> None:
    """libcst hashes a node by identity through a Python-level ``__hash__``
    (``return id(self)``) that every node class copies; the analysis keys
    dicts and sets by node millions of times per run, each a Python call.
    ``object.__hash__`` is the same identity hash, computed in C (equality
    stays libcst's identity test)."""
    original = cst.CSTNode.__dict__.get("__hash__")
    if original is None:
        return
    stack: List[type] = [cst.CSTNode]
    while stack:
        cls = stack.pop()
        if cls.__dict__.get("__hash__") is original:
            cls.__hash__ = object.__hash__  # type: ignore[method-assign, assignment]
        stack.extend(cls.__subclasses__())


_identity_hash()


def syntax_error_finding(path: str, exc: Exception, source: str) -> Finding:
    precise = _python_syntax_error(source)
    if precise is not None:
        message, line, column = precise
    elif isinstance(exc, cst.ParserSyntaxError):
        # Python accepts it but libcst does not (syntax newer than libcst knows)
        text = exc.message.strip().splitlines()[0] if exc.message.strip() else "invalid syntax"
        message = f"syntax not supported by the parser ({text})"
        line, column = exc.raw_line, exc.raw_column + 1
    elif isinstance(exc, RecursionError):
        message = "the file is too deeply nested to parse"
        line, column = 1, 1
    else:
        message = f"could not parse: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        line, column = 1, 1
    return Finding(
        code=SYNTAX_ERROR_CODE,
        name=SYNTAX_ERROR_NAME,
        message=f"SyntaxError: {message}",
        path=path,
        line=line,
        column=column,
        end_line=line,
        end_column=column,
        fix=None,
    )


#: files above this size get their large pure-data statements blanked before parsing
DATA_BLANKING_MIN_BYTES = 200_000
DATA_BLOCK_MIN_LINES = 100
#: ... or this many characters (a 300,000-element list on one line)
DATA_BLOCK_MIN_CHARS = 20_000


def blank_data_blocks(source: str, tree: Any = None) -> str:
    """Replace large top-level statements that hold only literal data (a table
    of numbers, a dict of names to strings) with empty lines.

    libcst needs about a kilobyte of memory per byte of such a table (a 500 kB
    generated table takes 690 MB), and no rule can report anything inside
    literals without a call or an operation around them. Line numbers and the
    text of every other statement are unchanged, so findings and fix
    positions still refer to the real file.
    """
    if len(source) < DATA_BLANKING_MIN_BYTES:
        return source
    if tree is None:
        tree = python_tree(source)[0]
    if tree is None:
        return source  # the libcst parse reports the problem
    lines = physical_lines(source, keepends=True)
    blanked = False
    for stmt in tree.body:
        first, last = stmt.lineno, stmt.end_lineno or stmt.lineno
        if last - first + 1 < DATA_BLOCK_MIN_LINES and sum(
            len(lines[index]) for index in range(first - 1, last)
        ) < DATA_BLOCK_MIN_CHARS:
            continue
        if stmt.col_offset or lines[last - 1][stmt.end_col_offset or 0:].strip() or not _pure_data(stmt):
            continue  # shares its first or last line with other code, or is not data
        for index in range(first - 1, last):
            text = lines[index]
            ending = text[len(text.rstrip("\r\n")):]
            lines[index] = ending
        blanked = True
    return "".join(lines) if blanked else source


_DATA_NODES = None


def _pure_data(stmt) -> bool:
    import ast

    global _DATA_NODES
    if _DATA_NODES is None:
        _DATA_NODES = (
            ast.Assign, ast.AnnAssign, ast.Expr, ast.Name, ast.Attribute, ast.Constant,
            ast.Tuple, ast.List, ast.Dict, ast.Set, ast.UnaryOp, ast.USub, ast.UAdd,
            ast.Load, ast.Store, ast.Subscript,
        )
    for node in ast.walk(stmt):
        if not isinstance(node, _DATA_NODES):
            return False
    return True


def may_trigger(rule: Type[Rule], source: str) -> bool:
    """Whether the source contains one of the rule's text triggers (a rule that
    declares none is always run)."""
    triggers = rule.triggers
    if not triggers:
        return True
    for trigger in triggers:
        if isinstance(trigger, str):
            if trigger in source:
                return True
        elif _found(trigger, source):
            return True
    return False


# a trigger's alternatives: (a plain substring, or a fast pattern; the exact
# pattern to confirm a fast candidate with, or None when the fast one is exact)
_Alternative = Tuple[Union[str, "re.Pattern[str]"], Optional["re.Pattern[str]"]]
_SPLIT: Dict["re.Pattern[str]", List[_Alternative]] = {}
_METACHARACTERS = frozenset(".^$*+?{}[]\\|()")
#: candidates confirmed one by one before the exact pattern searches the rest
_CANDIDATE_LIMIT = 64


def _found(trigger: "re.Pattern[str]", source: str) -> bool:
    """Whether ``trigger`` matches somewhere in ``source``, searched fast.

    Python's regex engine scans for a literal prefix (``exp``, ``where\\s*\\(``)
    20-50x faster than it tries a pattern at every position, and a pattern
    that starts with ``\\b`` or with an alternation of words has no such
    prefix. So a trigger is split into its top-level alternatives, each
    searched on its own (a plain word as a substring test), with its
    word-boundary assertions and a leading lookbehind dropped (dropping an
    assertion only widens a pattern); where one was dropped, the exact alternative is then
    tried only at the places the widened one matches. Same answer as
    ``trigger.search(source)``."""
    alternatives = _SPLIT.get(trigger)
    if alternatives is None:
        alternatives = _SPLIT[trigger] = _split(trigger)
    for fast, exact in alternatives:
        at = _next(fast, source, 0)
        if at < 0:
            continue
        if exact is None:
            return True
        for _ in range(_CANDIDATE_LIMIT):
            if exact.match(source, at):
                return True
            at = _next(fast, source, at + 1)
            if at < 0:
                break
        else:
            if exact.search(source, at):
                return True
    return False


def _next(fast: Union[str, "re.Pattern[str]"], source: str, begin: int) -> int:
    """Where ``fast`` next matches from ``begin`` on, or -1."""
    if isinstance(fast, str):
        return source.find(fast, begin)
    found = fast.search(source, begin)
    return -1 if found is None else found.start()


def _split(trigger: "re.Pattern[str]") -> List[_Alternative]:
    pattern, flags = trigger.pattern, trigger.flags
    # global inline flags apply to the whole pattern: keep it whole
    parts = [pattern] if _INLINE_FLAGS.match(pattern) else _alternatives(pattern)
    out: List[_Alternative] = []
    try:
        for part in parts:
            # inside a character class \b is a backspace, not an assertion: keep those
            widened = part if re.search(r"\[[^\]]*\\b", part) else part.replace(r"\b", "")
            # a leading lookbehind is an assertion too: `(?<=[\d.])e-\d` is found as `e-\d`, then
            # confirmed where it matches (a match at a position still sees the text before it)
            widened = _LEADING_LOOKBEHIND.sub("", widened, count=1)
            exact = None if widened == part else re.compile(part, flags)
            if widened and not (_METACHARACTERS & set(widened)) and not flags & re.IGNORECASE:
                out.append((widened, exact))
            else:
                out.append((re.compile(widened, flags), exact))
    except re.error:  # a split this simple scanner got wrong: search the trigger whole
        return [(trigger, None)]
    return out


_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux-]+[:)]")
_LEADING_LOOKBEHIND = re.compile(r"^\(\?<[=!](?:\\.|[^()\\])*\)")


def _alternatives(pattern: str) -> List[str]:
    """A pattern's top-level ``|`` alternatives (not those inside a group or a
    character class)."""
    parts: List[str] = []
    depth, in_class, escaped, begin = 0, False, False, 0
    for i, ch in enumerate(pattern):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]" or pattern[i - 1] == "["
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[begin:i])
            begin = i + 1
    parts.append(pattern[begin:])
    return parts


def python_tree(source: str) -> Tuple[Optional[Any], Optional[Tuple[str, int, int]]]:
    """(Python's own syntax tree or None, its syntax error or None). Python's
    parser is written in C, several times faster than libcst's, and bounds
    its own stack."""
    import ast

    try:
        return ast.parse(source), None
    except SyntaxError as err:
        return None, (err.msg or "invalid syntax", err.lineno or 1, max(err.offset or 1, 1))
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, deep nesting
        return None, (str(err) or type(err).__name__, 1, 1)


def _newer_syntax(source: str) -> bool:
    """Whether a text the running Python rejects is read by libcst's parser,
    which knows the grammar of newer Pythons: PEP 695 generics
    (``class Pipeline[T]:``, ``type X = ...``), PEP 701 f-strings, PEP 758
    ``except A, B:``. Such a file is valid code for the Python its project
    targets, not a syntax error (libcst rejects the real ones: ``f() = 1``,
    ``print 1``)."""
    try:
        parse(source)
    except Exception:
        return False
    return True


def _python_syntax_error(source: str) -> Optional[Tuple[str, int, int]]:
    """Python's own message and position for a syntax error: libcst's native
    parser reports where it gave up, often a line later than the mistake."""
    return python_tree(source)[1]


# -- native-stack hazards ----------------------------------------------------------
#
# libcst's parser is native code that recurses once per nesting level and
# slows down quadratically with an expression's depth: 3,000 nested brackets
# or a 4,000-link method chain overflow its stack (the process dies of
# SIGSEGV, which no `except` catches), and a 2,000-link chain takes 9 s to
# parse. Such input is refused before libcst sees it.

#: Python's own tokenizer refuses deeper nesting, so no runnable file is refused
MAX_BRACKET_DEPTH = 200
#: levels of Python's syntax tree: a 500-link method chain, a 1,000-term `+` chain
MAX_TREE_DEPTH = 1000
#: Python's messages for input too deep for its own (bounded) parser
_PYTHON_TOO_DEEP = ("too many nested parentheses", "maximum recursion depth", "MemoryError")

_BRACKET_LEXEMES = re.compile(
    r"#[^\r\n]*"
    r"|[rRbBuUfF]{0,2}(?:'''(?:[^'\\]|\\.|'(?!''))*(?:'''|\Z)"
    r'|"""(?:[^"\\]|\\.|"(?!""))*(?:"""|\Z)'
    r"|'(?:[^'\\\r\n]|\\.)*'?"
    r'|"(?:[^"\\\r\n]|\\.)*"?)'
    r"|[(\[{]|[)\]}]",
    re.DOTALL,
)


def bracket_depth(source: str) -> int:
    """The deepest bracket nesting outside strings and comments (a lexical
    scan: it works on a file with syntax errors too)."""
    if sum(source.count(c) for c in "([{") <= MAX_BRACKET_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan
    depth = deepest = 0
    for match in _BRACKET_LEXEMES.finditer(source):
        char = match.group()
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth = max(depth - 1, 0)
    return deepest


def tree_depth(tree: Any, source: str, limit: int = MAX_TREE_DEPTH) -> int:
    """The depth of Python's syntax tree where it exceeds ``limit`` (else a
    lower bound). Only subtrees that span enough text to exceed ``limit`` are
    entered (a child spans less text than its parent), so ordinary statements
    cost a node or two each."""
    import ast

    starts = line_starts(source)
    deepest = 0
    stack: List[Tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        end_line = getattr(node, "end_lineno", None)
        if end_line is not None and end_line - 1 < len(starts):
            # columns count UTF-8 bytes, never fewer than characters: an over-estimate
            span = starts[end_line - 1] + (node.end_col_offset or 0) - starts[node.lineno - 1]
            if depth + span + 2 <= limit:  # +2: operator and context leaves
                continue
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def nesting_problem(source: str, tree: Any) -> Optional[str]:
    """Why ``source`` must not be given to libcst's native parser, or None.
    ``tree`` is Python's syntax tree of it (None when Python rejected it)."""
    if tree is None:
        depth = bracket_depth(source)
        if depth > MAX_BRACKET_DEPTH:
            return f"{depth} nested brackets (Python allows {MAX_BRACKET_DEPTH})"
        return None
    # Python's tokenizer refuses more than MAX_BRACKET_DEPTH nested brackets
    # (f-string fields included), so a text it parsed needs no bracket scan
    depth = tree_depth(tree, source)
    if depth > MAX_TREE_DEPTH:
        return f"an expression {depth} levels deep (the limit is {MAX_TREE_DEPTH})"
    return None


def lint_source(
    source: str,
    path: str,
    rules: Sequence[Type[Rule]],
    dtypes: Sequence[DtypeFacts],
    rule_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    module: Optional[cst.Module] = None,
    project=None,
) -> Result:
    """Lint one unit of Python source with the given rule classes (see
    :func:`_lint_source`), with Python's cyclic garbage collector paused.

    A parse allocates a tree of a hundred thousand objects that all stay
    alive until the file is done, and the collector, triggered by allocation
    counts, traverses them again and again for nothing: it took 1.0 s of a
    6.5 s single-process run of torch's nn/optim/distributions tree (measured
    with ``gc.callbacks``). Refcounting still frees what a file drops, and
    the file's analysis objects are cleared at its end (see ``_lint_source``),
    so the few cycles left are collected when the collector runs again
    (0.08 s in all)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _lint_source(source, path, rules, dtypes, rule_options, module, project)
    finally:
        if paused:
            gc.enable()


def _lint_source(
    source: str,
    path: str,
    rules: Sequence[Type[Rule]],
    dtypes: Sequence[DtypeFacts],
    rule_options: Optional[Mapping[str, Mapping[str, Any]]],
    module: Optional[cst.Module],
    project,
) -> Result:
    """Lint one unit of Python source with the given rule classes.

    A source that contains none of the selected rules' text triggers is not
    parsed with libcst (no rule could report anything in it); Python's own
    parser, about ten times faster, still checks its syntax so NL000 is
    reported for every file. ``project`` (:class:`nanlint.analysis.project.ProjectFile`)
    is the file's view of the checked project, for rules that follow values
    across modules.
    """
    rules = [r for r in rules if may_trigger(r, source)
             or (r.cross_module and project is not None and project.imports_trigger(r, may_trigger))]
    parsed_text = source
    tree = None
    if module is None:
        tree, problem = python_tree(source)
        if not rules and problem is None:
            return Result([], [])  # valid Python that no rule can report on: libcst never sees it
        hazard = nesting_problem(source, tree)
        if hazard is None and problem is not None and problem[0].startswith(_PYTHON_TOO_DEEP):
            hazard = f"Python's parser gave up ({problem[0]})"
        if hazard is not None:
            return Result([], [f"{path}: too deeply nested to check: {hazard}; not checked"])
        if not rules:  # and Python rejected the text
            if _newer_syntax(source):
                return Result([], [])
            return Result([syntax_error_finding(path, SyntaxError(problem[0]), source)], [])
        parsed_text = blank_data_blocks(source, tree)
        try:
            module = parse(parsed_text)
        except Exception as exc:  # libcst raises several kinds on bad input
            return Result([syntax_error_finding(path, exc, source)], [])
    names = Names()
    names.scan(module.body)
    if project is not None:
        project.bind_star_names(names)
    ctx = Context(path, source, module, names, dtypes, project)
    options = rule_options or {}
    instances = [cls(ctx, options.get(cls.code)) for cls in rules]
    try:
        return _run_rules(ctx, instances, names, module, source, path, parsed_text, tree)
    finally:
        # the rules, the context and the analysis refer to each other (a report
        # names its rule, a rule its context): cleared, the file's tree is
        # freed by refcounting now instead of by the cyclic collector later
        for owner in (*instances, ctx._facts, ctx):
            if owner is not None:
                vars(owner).clear()


def _run_rules(ctx: Context, instances: List[Rule], names: Names, module: cst.Module, source: str,
               path: str, parsed_text: str, tree: Any) -> Result:
    """One traversal of ``module`` calling every rule's handlers, then the
    findings of what the rules reported."""
    on_visit: Dict[type, List[Handler]] = {cst.Import: [names.add_import], cst.ImportFrom: [names.add_import_from]}
    on_leave: Dict[type, List[Handler]] = {}
    for rule in instances:
        for kind, node_cls, attr in _rule_handlers(type(rule)):
            table = on_visit if kind == "visit_" else on_leave
            table.setdefault(node_cls, []).append(getattr(rule, attr))
    errors: List[str] = []
    try:
        with deep_codegen():  # rules read nodes' source text (ctx.code)
            walk(module, on_visit, on_leave, ctx.kids)
    except RecursionError:
        errors.append(f"{path}: too deeply nested for the rules; not checked")
        return Result([], errors)
    except Exception as exc:  # a rule bug must not stop the run
        errors.append(f"{path}: internal error while checking: {type(exc).__name__}: {exc}")
        return Result([], errors)
    if not ctx.reports:
        return Result([], errors)
    try:
        with deep_codegen():
            return Result(_materialise(ctx, module, source, path, parsed_text, tree), errors)
    except RecursionError:  # libcst's code generation recurses (a 5000-term `+` chain)
        errors.append(f"{path}: too deeply nested for the rules; not checked")
        return Result([], errors)


def _materialise(ctx: Context, module: cst.Module, source: str, path: str, parsed_text: str,
                 tree: Any = None) -> List[Finding]:
    reports = ctx.reports
    sites = _import_sites(module) if any(r.fix and r.fix.imports for r in reports) else None
    wanted: List[cst.CSTNode] = []
    for report in reports:
        wanted.append(report.node)
        if report.fix is not None:
            wanted.extend(node for node, _ in report.fix.replace)
            wanted.extend(node for node, _ in report.fix.insert_before)
            wanted.extend(node for node, _ in report.fix.insert_after)
    if sites is not None:
        wanted.extend(node for node in sites if node is not None)
        if module.body:
            wanted.append(module.body[0])
    starts = line_starts(parsed_text)  # blanked data keeps lines, not offsets
    ranges = _ranges(ctx, module, wanted, starts, parsed_text, tree)
    lines = physical_lines(source)
    findings: Dict[Tuple[Any, ...], Finding] = {}
    for report in reports:
        rng = ranges.get(report.node)
        if rng is None:
            continue
        line, col = rng.inner_start
        line_text = lines[line - 1] if line - 1 < len(lines) else ""
        if is_suppressed(line_text, report.rule.code, report.rule.name):
            continue
        end_line, end_col = rng.inner_end
        fix = None
        if report.fix is not None:
            fix = _edits_for(report.fix, ctx, module, ranges, lines, sites)
        finding = Finding(
            code=report.rule.code,
            name=report.rule.name,
            message=report.message,
            path=path,
            line=line,
            column=col + 1,
            end_line=end_line,
            end_column=end_col + 1,
            fix=fix,
            confidence=report.confidence,
        )
        key = (finding.code, line, col, end_line, end_col, finding.message)
        findings.setdefault(key, finding)
    return sorted(findings.values(), key=Finding.sort_key)


def _ranges(ctx: Context, module: cst.Module, wanted: List[cst.CSTNode], starts: List[int], text: str,
            tree: Any) -> Dict[cst.CSTNode, Range]:
    """Positions of the wanted nodes: from the code of their own top-level
    statements where Python's tree tells where those begin (a module's code
    up to its last finding costs about a fifth of a cold check otherwise)."""
    lines = statement_lines(module, tree) if tree is not None else None
    if lines is not None:
        owners = _owners(ctx, module, wanted)
        if owners is not None:
            ranges = compute_statement_ranges(module, wanted, starts, text, owners, lines)
            if ranges is not None:
                return ranges
    return compute_ranges(module, wanted, starts)


def _owners(ctx: Context, module: cst.Module, wanted: List[cst.CSTNode]) -> Optional[Dict[cst.CSTNode, int]]:
    """The index in ``module.body`` of the statement holding each wanted node."""
    top = {stmt: i for i, stmt in enumerate(module.body)}
    owners: Dict[cst.CSTNode, int] = {}
    facts = ctx._facts
    if facts is not None:  # the shared analysis already knows every node's parent
        for node in wanted:
            up = node if node in top else next((a for a in facts.scopes.ancestors(node) if a in top), None)
            if up is None:
                return None
            owners[node] = top[up]
        return owners
    remaining = set(wanted)
    for i, stmt in enumerate(module.body):
        for node in subtree(stmt):
            if node in remaining:
                owners[node] = i
                remaining.discard(node)
        if not remaining:
            return owners
    return None


class _ImportSites(NamedTuple):
    """Module-level statements of the leading run of docstring/``__future__``/
    import statements that new imports go beside."""

    #: the last statement of the run: third-party imports go after it
    last: Optional[cst.CSTNode]
    #: the last standard-library import (``__future__`` included): stdlib imports go after it
    last_stdlib: Optional[cst.CSTNode]
    #: the first import: stdlib imports go before it when the run has no stdlib import
    first_import: Optional[cst.CSTNode]


@lru_cache(maxsize=1)
def _stdlib_modules() -> frozenset:
    names = getattr(sys, "stdlib_module_names", None)
    if names is None:  # Python 3.9: the modules in the standard library's folder
        import pkgutil
        import sysconfig

        names = {m.name for m in pkgutil.iter_modules([sysconfig.get_paths()["stdlib"]])}
        names |= set(sys.builtin_module_names)
    return frozenset(names)


def _top_module(small: cst.BaseSmallStatement) -> Optional[str]:
    """``os`` for ``import os.path`` or ``from os import path``; None for a relative import."""
    if isinstance(small, cst.Import):
        expr: cst.BaseExpression = small.names[0].name
    elif small.relative or small.module is None:
        return None
    else:
        expr = small.module
    while isinstance(expr, cst.Attribute):
        expr = expr.value
    return expr.value if isinstance(expr, cst.Name) else None


def _import_sites(module: cst.Module) -> _ImportSites:
    last = last_stdlib = first_import = None
    for index, stmt in enumerate(module.body):
        if not isinstance(stmt, cst.SimpleStatementLine):
            break
        kinds = set()
        for small in stmt.body:
            if isinstance(small, (cst.Import, cst.ImportFrom)):
                kinds.add("stdlib" if _top_module(small) in _stdlib_modules() else "import")
            elif (
                index == 0
                and isinstance(small, cst.Expr)
                and isinstance(small.value, (cst.SimpleString, cst.ConcatenatedString))
            ):
                kinds.add("docstring")
            else:
                kinds.add("other")
        if "other" in kinds:
            break
        last = stmt
        if "stdlib" in kinds:
            last_stdlib = stmt
        if first_import is None and kinds & {"stdlib", "import"}:
            first_import = stmt
    return _ImportSites(last, last_stdlib, first_import)


def _import_position(
    name: str, sites: _ImportSites, module: cst.Module, ranges: Mapping[cst.CSTNode, Range]
) -> Optional[Tuple[int, int, bool]]:
    """(line, 0-based column, whether that position ends a statement) where
    ``import name`` goes: a standard-library module after the last stdlib
    import (or before the first import), anything else after every import."""
    if name in _stdlib_modules():
        if sites.last_stdlib is not None:
            after, before = sites.last_stdlib, None
        else:
            after, before = (None, sites.first_import) if sites.first_import is not None else (sites.last, None)
    else:
        after, before = sites.last, None
    if after is not None:
        if after not in ranges:
            return None
        line, column = ranges[after].end
        return line, column, True
    first = before if before is not None else (module.body[0] if module.body else None)
    if first is None or first not in ranges:
        return None
    return ranges[first].inner_start[0], 0, False


def _statement_start(
    node: cst.CSTNode, ranges: Mapping[cst.CSTNode, Range], lines: Sequence[str]
) -> Optional[Tuple[Range, str]]:
    """The statement's range and indentation, or None when it is unknown or the
    statement does not start its line (nothing can be inserted beside it)."""
    rng = ranges.get(node)
    if rng is None:
        return None
    indent = _indent_of(lines, rng.inner_start)
    return None if indent is None else (rng, indent)


def _indent_of(lines: Sequence[str], pos: Tuple[int, int]) -> Optional[str]:
    line, col = pos
    if line - 1 >= len(lines):
        return None
    prefix = lines[line - 1][:col]
    if prefix.strip():
        return None  # the statement does not start its line: cannot insert safely
    return prefix


def _edits_for(
    spec: FixSpec,
    ctx: Context,
    module: cst.Module,
    ranges: Mapping[cst.CSTNode, Range],
    lines: Sequence[str],
    sites: Optional[_ImportSites],
) -> Optional[Fix]:
    newline = module.default_newline
    edits: List[Edit] = []
    for node, new in spec.replace:
        rng = ranges.get(node)
        if rng is None:
            return None
        content = new if isinstance(new, str) else module.code_for_node(new)
        (l1, c1), (l2, c2) = rng.inner_start, rng.inner_end
        edits.append(Edit(l1, c1 + 1, l2, c2 + 1, content))
    for node, code in spec.insert_before:
        anchor_at = _statement_start(node, ranges, lines)
        if anchor_at is None:
            return None
        rng, indent = anchor_at
        text = "".join(part + newline + indent for part in code.splitlines())
        l1, c1 = rng.inner_start
        edits.append(Edit(l1, c1 + 1, l1, c1 + 1, text))
    for node, code in spec.insert_after:
        anchor_at = _statement_start(node, ranges, lines)
        if anchor_at is None:
            return None
        rng, indent = anchor_at
        l2, c2 = rng.end
        body = "".join(indent + part + newline for part in code.splitlines())
        if c2 != 0:  # the statement ends the file without a newline
            body = newline + body.rstrip("\r\n")
        edits.append(Edit(l2, c2 + 1, l2, c2 + 1, body))
    missing = [m for m in dict.fromkeys(spec.imports) if ctx.names.alias_for(m) is None]
    if missing and sites is not None:
        grouped: Dict[Tuple[int, int, bool], List[str]] = {}
        for name in sorted(missing):
            position = _import_position(name, sites, module, ranges)
            if position is None:
                return None
            grouped.setdefault(position, []).append(name)
        for (line, column, ends_statement), names in grouped.items():
            text = "".join(f"import {m}{newline}" for m in names)
            if ends_statement and column != 0:  # after a statement that ends the file without a newline
                text = newline + text.rstrip("\r\n")
            edits.append(Edit(line, column + 1, line, column + 1, text))
    return Fix(spec.applicability, spec.message, tuple(sorted(edits, key=lambda e: (e.line, e.column))))
