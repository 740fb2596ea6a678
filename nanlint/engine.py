"""Parse a unit of source once, run the selected rules in one traversal, apply
``# noqa``, and return findings. No I/O: the caller hands over the text."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Type

import libcst as cst

from .dtypes import DtypeFacts
from .finding import Edit, Finding, Fix
from .positions import Range, compute_ranges, line_starts
from .resolve import Names
from .rule import Context, FixSpec, Report, Rule

SYNTAX_ERROR_CODE = "NL000"
SYNTAX_ERROR_NAME = "syntax-error"

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
    for name in _FIELDS_CACHE.get(type(node)) or _child_fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            out.append(value)
        elif type(value) is tuple or type(value) is list:
            out.extend(item for item in value if isinstance(item, cst.CSTNode))
    return out


def iter_tree(root: cst.CSTNode) -> Iterator[Tuple[cst.CSTNode, Optional[cst.CSTNode]]]:
    """(node, parent) for every node under ``root`` in source order, without recursion."""
    stack: List[Tuple[cst.CSTNode, Optional[cst.CSTNode]]] = [(root, None)]
    while stack:
        node, parent = stack.pop()
        yield node, parent
        stack.extend((child, node) for child in reversed(children(node)))


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


Handler = Callable[[cst.CSTNode], Any]


def walk(
    root: cst.CSTNode,
    on_visit: Mapping[type, Sequence[Handler]],
    on_leave: Mapping[type, Sequence[Handler]],
) -> None:
    """Depth-first, source-order traversal without recursion (deeply nested
    expressions must not hit Python's recursion limit)."""
    CSTNode = cst.CSTNode
    stack: List[Any] = [root]
    pop = stack.pop
    push = stack.append
    leave_marker = _LEAVE
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
        fields = _FIELDS_CACHE.get(cls) or _child_fields(cls)
        children: List[cst.CSTNode] = []
        for name in fields:
            value = getattr(node, name)
            if isinstance(value, CSTNode):
                children.append(value)
            elif type(value) is tuple or type(value) is list:
                for item in value:
                    if isinstance(item, CSTNode):
                        children.append(item)
        if children:
            children.reverse()
            stack.extend(children)


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


# -- suppression ---------------------------------------------------------------

NOQA_RE = re.compile(
    r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?",
    re.IGNORECASE,
)
_CODE_RE = re.compile(r"[A-Z]+[0-9]+", re.IGNORECASE)


def noqa_codes(line_text: str) -> Optional[frozenset]:
    """None: no noqa; empty set: a bare noqa (everything); else the codes listed."""
    match = None
    for match in NOQA_RE.finditer(line_text):
        pass
    if match is None:
        return None
    codes = match.group("codes")
    if not codes:
        return frozenset()
    return frozenset(c.upper() for c in _CODE_RE.findall(codes))


_NOQA_WORD = re.compile("noqa", re.IGNORECASE)
_LINE_SPLIT_RE = re.compile(r"\r\n|\r|\n")
_LINE_KEEP_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def physical_lines(source: str, keepends: bool = False) -> List[str]:
    """The source's lines as Python counts them: only \\n, \\r\\n and \\r end a
    line (``str.splitlines`` also splits at form feeds, \\x1c-\\x1e, \\x85 and
    \\u2028, which would shift every later line number)."""
    if keepends:
        return _LINE_KEEP_RE.findall(source)
    return _LINE_SPLIT_RE.split(source)


def unknown_noqa_codes(source: str, path: str, known: Iterable[str]) -> List[str]:
    """Warnings for ``# noqa: NLxxx`` comments naming a code that is not a
    nanlint rule (codes of other tools, e.g. ``E501``, are left alone)."""
    if not _NOQA_WORD.search(source):  # no copy of the text for the common case
        return []
    known_set = set(known) | {SYNTAX_ERROR_CODE}
    warnings: List[str] = []
    for number, line in enumerate(physical_lines(source), start=1):
        if "#" not in line:
            continue
        codes = noqa_codes(line)
        if not codes:
            continue
        for code in sorted(c for c in codes if c.startswith("NL") and c not in known_set):
            warnings.append(f"{path}:{number}: unknown rule code `{code}` in `# noqa` (see `nanlint rule --all`)")
    return warnings


def is_suppressed(line_text: str, code: str) -> bool:
    codes = noqa_codes(line_text)
    if codes is None:
        return False
    return not codes or code in codes


# -- linting ---------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    findings: List[Finding]
    #: internal errors (a rule crashed); messages, never tracebacks for the user
    errors: List[str]


def parse(source: str) -> cst.Module:
    return cst.parse_module(source)


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


def blank_data_blocks(source: str) -> str:
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
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return source  # the libcst parse reports the problem
    lines = physical_lines(source, keepends=True)
    blanked = False
    for stmt in tree.body:
        first, last = stmt.lineno, stmt.end_lineno or stmt.lineno
        if last - first + 1 < DATA_BLOCK_MIN_LINES or not _pure_data(stmt):
            continue
        if lines[last - 1][stmt.end_col_offset or 0:].strip():
            continue  # shares its last line with other code
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
        elif trigger.search(source):
            return True
    return False


def _python_syntax_error(source: str) -> Optional[Tuple[str, int, int]]:
    """Python's own message and position for a syntax error: libcst's native
    parser reports where it gave up, often a line later than the mistake."""
    import ast

    try:
        ast.parse(source)
    except SyntaxError as err:
        return err.msg or "invalid syntax", err.lineno or 1, max(err.offset or 1, 1)
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, deep nesting
        return str(err) or type(err).__name__, 1, 1
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
    if not rules:
        problem = _python_syntax_error(source)
        if problem is None:
            return Result([], [])
        return Result([syntax_error_finding(path, SyntaxError(problem[0]), source)], [])
    parsed_text = source
    if module is None:
        parsed_text = blank_data_blocks(source)
        try:
            module = parse(parsed_text)
        except Exception as exc:  # libcst raises several kinds on bad input
            return Result([syntax_error_finding(path, exc, source)], [])
    names = Names()
    names.scan(module.body)
    ctx = Context(path, source, module, names, dtypes, project)
    options = rule_options or {}
    instances = [cls(ctx, options.get(cls.code)) for cls in rules]
    on_visit: Dict[type, List[Handler]] = {cst.Import: [names.add_import], cst.ImportFrom: [names.add_import_from]}
    on_leave: Dict[type, List[Handler]] = {}
    for rule in instances:
        for kind, node_cls, attr in _rule_handlers(type(rule)):
            table = on_visit if kind == "visit_" else on_leave
            table.setdefault(node_cls, []).append(getattr(rule, attr))
    errors: List[str] = []
    try:
        walk(module, on_visit, on_leave)
    except RecursionError:
        errors.append(f"{path}: too deeply nested for the rules; not checked")
        return Result([], errors)
    except Exception as exc:  # a rule bug must not stop the run
        errors.append(f"{path}: internal error while checking: {type(exc).__name__}: {exc}")
        return Result([], errors)
    if not ctx.reports:
        return Result([], errors)
    try:
        return Result(_materialise(ctx, module, source, path, parsed_text), errors)
    except RecursionError:  # libcst's code generation recurses (a 5000-term `+` chain)
        errors.append(f"{path}: too deeply nested for the rules; not checked")
        return Result([], errors)


def _materialise(ctx: Context, module: cst.Module, source: str, path: str, parsed_text: str) -> List[Finding]:
    reports = ctx.reports
    anchor = _import_anchor(module) if any(r.fix and r.fix.imports for r in reports) else None
    wanted: List[cst.CSTNode] = []
    for report in reports:
        wanted.append(report.node)
        if report.fix is not None:
            wanted.extend(node for node, _ in report.fix.replace)
            wanted.extend(node for node, _ in report.fix.insert_before)
            wanted.extend(node for node, _ in report.fix.insert_after)
    if anchor is not None:
        wanted.append(anchor)
    elif module.body and any(r.fix and r.fix.imports for r in reports):
        wanted.append(module.body[0])
    starts = line_starts(parsed_text)  # blanked data keeps lines, not offsets
    ranges = compute_ranges(module, wanted, starts)
    lines = physical_lines(source)
    findings: Dict[Tuple[Any, ...], Finding] = {}
    for report in reports:
        rng = ranges.get(report.node)
        if rng is None:
            continue
        line, col = rng.inner_start
        line_text = lines[line - 1] if line - 1 < len(lines) else ""
        if is_suppressed(line_text, report.rule.code):
            continue
        end_line, end_col = rng.inner_end
        fix = None
        if report.fix is not None:
            fix = _edits_for(report.fix, ctx, module, ranges, lines, anchor)
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


def _import_anchor(module: cst.Module) -> Optional[cst.CSTNode]:
    """The module-level statement after which new imports go: the last import of
    the leading run of docstring/``__future__``/import statements."""
    anchor = None
    for index, stmt in enumerate(module.body):
        if not isinstance(stmt, cst.SimpleStatementLine):
            break
        kinds = set()
        for small in stmt.body:
            if isinstance(small, (cst.Import, cst.ImportFrom)):
                kinds.add("import")
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
        anchor = stmt
    return anchor


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
    anchor: Optional[cst.CSTNode],
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
    if missing:
        text = "".join(f"import {m}{newline}" for m in sorted(missing))
        if anchor is not None and anchor in ranges:
            l2, c2 = ranges[anchor].end
            if c2 != 0:
                text = newline + text.rstrip("\r\n")
        elif module.body and module.body[0] in ranges:
            l2, c2 = ranges[module.body[0]].inner_start[0], 0
        else:
            return None
        edits.append(Edit(l2, c2 + 1, l2, c2 + 1, text))
    return Fix(spec.applicability, spec.message, tuple(sorted(edits, key=lambda e: (e.line, e.column))))
