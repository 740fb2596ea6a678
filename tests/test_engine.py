"""The engine's contracts: alias resolution, positions, noqa, syntax errors,
one traversal, and rules that never see files."""

from __future__ import annotations

import libcst as cst
import pytest

from nanlint import engine
from nanlint.engine import lint_source, noqa_codes, walk
from nanlint.dtypes import FLOAT16
from nanlint.fix import OverlapError, apply_edits
from nanlint.finding import Edit
from nanlint.positions import compute_ranges
from nanlint.resolve import Names
from nanlint.rule import Rule

from helpers import lint


@pytest.mark.parametrize(
    "imports, expr, expected",
    [
        ("import torch as T", "T.exp", "torch.exp"),
        ("from torch import exp", "exp", "torch.exp"),
        ("import torch.nn.functional as F", "F.softmax", "torch.nn.functional.softmax"),
        ("from torch.nn import functional", "functional.normalize", "torch.nn.functional.normalize"),
        ("from torch.nn import functional as fn", "fn.normalize", "torch.nn.functional.normalize"),
        ("import torch.nn.functional", "torch.nn.functional.gelu", "torch.nn.functional.gelu"),
        ("import numpy as np", "np.exp", "numpy.exp"),
        ("import torch", "x.exp", None),
        ("from . import functional as F", "F.softmax", None),
    ],
)
def test_alias_resolution(imports, expr, expected):
    names = Names()
    names.scan(cst.parse_module(imports + "\n").body)
    assert names.resolve(cst.parse_expression(expr)) == expected


def test_alias_for_prefers_the_module_binding():
    names = Names()
    names.scan(cst.parse_module("import torch as T\nfrom torch import nn\n").body)
    assert names.alias_for("torch") == "T"
    assert names.alias_for("math") is None


def test_imports_inside_functions_and_try_blocks_count():
    source = (
        "try:\n    import torch as T\nexcept ImportError:\n    T = None\n"
        "def f(x):\n    import torch.nn.functional as G\n    return T.exp(x) + G.softmax(x, -1)\n"
    )
    found = lint(source, ["NL002"])
    assert [(f.line, f.column) for f in found] == [(7, 12)]


def test_positions_are_one_based_and_exclude_parentheses():
    source = "import torch\ny = 1 + (torch.exp(\n    x))\n"
    (finding,) = lint(source, ["NL002"])
    assert (finding.line, finding.column, finding.end_line, finding.end_column) == (2, 10, 3, 7)


def test_compute_ranges_only_for_requested_nodes():
    module = cst.parse_module("a = 1\nb = f(2)\n")
    call = module.body[1].body[0].value
    ranges = compute_ranges(module, [call])
    assert list(ranges) == [call]
    assert ranges[call].inner_start == (2, 4) and ranges[call].inner_end == (2, 8)


@pytest.mark.parametrize(
    "comment, suppressed",
    [
        ("# noqa", True),
        ("# noqa: NL002", True),
        ("# noqa: NL001, NL002", True),
        ("# NOQA:NL002", True),
        ("# noqa: NL003", False),
        ("# noqa: E501", False),
        ("# some comment", False),
    ],
)
def test_noqa(comment, suppressed):
    source = f"import torch\ny = torch.exp(x)  {comment}\n"
    assert (lint(source, ["NL002"]) == []) is suppressed


def test_noqa_on_first_line_of_multiline_expression():
    source = "import torch\ny = torch.exp(  # noqa: NL002\n    x\n)\n"
    assert lint(source, ["NL002"]) == []
    source = "import torch\ny = torch.exp(\n    x  # noqa: NL002\n)\n"
    assert len(lint(source, ["NL002"])) == 1


def test_noqa_codes_parsing():
    assert noqa_codes("x  # noqa") == frozenset()
    assert noqa_codes("x  # noqa: NL001,NL002") == {"NL001", "NL002"}
    assert noqa_codes("x") is None
    assert noqa_codes("x  # noqa: unclamped-exp, NL003") == {"unclamped-exp", "NL003"}
    assert noqa_codes("x  # noqa: fp16-overflow-literal") == {"fp16-overflow-literal"}


def test_syntax_error_is_nl000_with_pythons_position():
    result = lint_source("x = (1,\ny = 2\n", "a.py", [], [FLOAT16])
    (finding,) = result.findings
    assert (finding.code, finding.name, finding.line, finding.column) == ("NL000", "syntax-error", 1, 5)
    assert "never closed" in finding.message


@pytest.mark.parametrize("source", [
    "class Pipeline[T](Base):\n    pass\n",
    "def load[T: int](x: T) -> T:\n    return x\n",
    "type Shape = tuple[int, ...]\n",
    "x = f'{a['b']}'\n",
])
def test_syntax_newer_than_this_python_is_not_a_syntax_error(source):
    """Files of a project that targets a newer Python parse with libcst:
    checked, never NL000, whether or not a rule's trigger is in them; real
    errors libcst rejects too stay NL000."""
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("this Python reads the syntax itself")
    assert lint_source(source, "a.py", [], [FLOAT16]).findings == []
    triggered = source + "import torch\ny = torch.log(torch.softmax(z, -1) + 1e-10)\n"
    codes = [f.code for f in lint(triggered)]
    assert codes and "NL000" not in codes  # checked: the rules report on it
    for bad in ("f() = 1\n", "print 1\n", "del f()\n"):
        assert [f.code for f in lint_source(bad, "a.py", [], [FLOAT16]).findings] == ["NL000"]


def test_rule_crash_is_an_error_not_an_exception():
    class Broken(Rule):
        code = "NL999"
        name = "broken"

        def visit_Call(self, node):
            raise ValueError("boom")

    result = lint_source("f()\n", "a.py", [Broken], [FLOAT16])
    assert result.findings == []
    assert result.errors == ["a.py: internal error while checking: ValueError: boom"]


def test_single_traversal_visits_in_source_order():
    seen = []
    module = cst.parse_module("@dec()\ndef f(a=g()):\n    return h(x() if c() else y())\n")
    walk(module, {cst.Call: [lambda n: seen.append(cst.Module([]).code_for_node(n.func))],
                  cst.Name: [lambda n: None]}, {})
    # decorators before defaults before the body; an IfExp's body before its test
    assert seen == ["dec", "g", "h", "x", "c", "y"]


def test_deep_nesting_does_not_recurse_in_the_walker():
    module = cst.parse_module("x = " + "(" * 200 + "1" + ")" * 200 + "\n")
    count = []
    walk(module, {cst.Integer: [count.append]}, {})
    assert len(count) == 1


def test_apply_edits_and_overlap():
    text = "abc\ndef\n"
    assert apply_edits(text, [Edit(2, 1, 2, 2, "X"), Edit(1, 4, 1, 4, "!")]) == "abc!\nXef\n"
    with pytest.raises(OverlapError):
        apply_edits(text, [Edit(1, 1, 1, 3, "x"), Edit(1, 2, 1, 4, "y")])


def test_stdlib_import_added_once_before_third_party_keeping_crlf():
    from helpers import fix_all

    source = '"""Doc."""\r\nimport torch\r\n\r\na = torch.exp(p)\r\nb = torch.exp(q)\r\n'
    fixed = fix_all(source, ["NL002"])
    assert fixed.count("import math") == 1
    assert fixed.startswith('"""Doc."""\r\nimport math\r\nimport torch\r\n\r\n')  # stdlib before torch
    assert "\n" not in fixed.replace("\r\n", "")
    compile(fixed, "x", "exec")


def test_large_pure_data_statements_are_blanked_but_positions_kept():
    from nanlint.engine import DATA_BLANKING_MIN_BYTES, blank_data_blocks

    table = "TABLE = {\n" + "".join(f"    ({i}, {i + 1}): [{i}.5, -{i}e-3, 'x'],\n" for i in range(6000)) + "}\n"
    assert len(table) > DATA_BLANKING_MIN_BYTES
    source = "import torch\n" + table + "y = torch.exp(x)\nSMALL = {1: 2}\n"
    blanked = blank_data_blocks(source)
    assert blanked.count("\n") == source.count("\n")
    assert "TABLE" not in blanked and "SMALL = {1: 2}" in blanked
    (finding,) = lint(source, ["NL002"])
    assert (finding.line, finding.column) == (source.count("\n") - 1, 5)
    # a statement with calls is never blanked
    calls = "OPS = [\n" + "".join(f"    f({i}),\n" for i in range(9000)) + "]\n"
    assert blank_data_blocks(calls) == calls


def test_node_text_after_its_budget_is_the_generated_code_of_every_expression():
    """Context.code slices recorded text once generating costs too much (a
    400-link chain read link by link took 17 s); the text must not change."""
    import glob
    import importlib.util
    import os

    from nanlint.engine import subtree
    from nanlint.positions import NodeText

    torch_dir = os.path.dirname(importlib.util.find_spec("torch").origin)
    paths = sorted(glob.glob(os.path.join(torch_dir, "nn", "modules", "*.py")))[:6]
    paths += sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "fixtures", "NL*", "*.py")))
    checked = 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            module = cst.parse_module(handle.read())
        text = NodeText(module, 1)
        text.budget = 0  # slice from the start
        for node in subtree(module):
            if isinstance(node, cst.BaseExpression):
                assert text(node) == module.code_for_node(node), (path, module.code_for_node(node))
                checked += 1
    assert checked > 10_000


def test_the_split_trigger_search_answers_as_the_whole_pattern_does():
    """Triggers are searched alternative by alternative, widened, then
    confirmed: the answer must be the plain ``search``'s on every rule's
    triggers, for text built to sit on the edges (a word inside a longer
    word, a boundary at the start or end, a candidate past the confirm limit)."""
    import re

    from nanlint.engine import _CANDIDATE_LIMIT, _found
    from nanlint.registry import all_rules

    texts = [
        "", "exp", "x.exp()", "expand(x)", "expexp", "_exp", "exp_", "exp2 ", "torch.expm1(x)",
        "inf", "finfo", "info", "Infinity", "-math.inf\n", "1e9", "1E+10", "1e-8", "1_000_000",
        "2 ** 30", "0x7f", "where (m)", "elsewhere(m)", "x.where(", "sqrt", "rsqrt_", "pow_(2)",
        "x ** 0.5", "x ** (1 / 2)", "acos", "arccos", "dacos", "F.binary_cross_entropy(p, y)",
        "nn.BCELoss()", "logits.softmax(-1)", "mysoftmax", "Parameter(", "nn.Parameterize",
        "log(", "catalog(", "log10 (x)", "clip_grad_norm_", "backward", "tanh", "Linear",
        "expand " * (_CANDIDATE_LIMIT + 5) + "exp", "expand " * (_CANDIDATE_LIMIT + 5),
        "a" * 50 + "inf" + "b",
        # a leading lookbehind dropped then confirmed: `e-` after a digit or a point, or not
        "1e-8", "1.e-5", "size-1", "e-1", "namee-3", ".E-4", "x" + "e-1 " * (_CANDIDATE_LIMIT + 5) + "1e-2",
        "12345", "1 ** -2", "1**(2", "arcsin_(x)", "atanh", "float_power", "expit(x)", "Sigmoid()",
    ]
    checked = 0
    for rule in all_rules():
        for trigger in rule.triggers:
            if isinstance(trigger, str):
                continue
            for text in texts:
                assert _found(trigger, text) == bool(trigger.search(text)), (rule.code, trigger.pattern, text)
                checked += 1
    assert checked > 500
    # patterns this scanner must not split wrongly: classes holding | and ), groups, flags
    for pattern in [r"[|)]x|y", r"(?:a|b)c|d", r"(?i)inf|nan", r"[]|]z", r"\(|\)", r"a\|b",
                    r"(?<=[(|])x|(?<!a)b", r"(?i:inf)|nan"]:
        trigger = re.compile(pattern)
        for text in ["|x", ")x", "ac", "bc", "d", "INF", "Nan", "]z", "|z", "(", ")", "a|b", "ab", "(x", "cb"]:
            assert _found(trigger, text) == bool(trigger.search(text)), (pattern, text)


def test_parse_skips_validation_only_while_parsing():
    """The parse gives the same tree as libcst's validating parse, and a node
    built by hand afterwards is validated again (a fix's new node must be)."""
    source = "import torch\n\n@dec(a, *b)\ndef f(x, /, y=1e-8, *, z):\n    return (x.exp() + y) [1:2]  # c\n"
    tree = engine.parse(source)
    assert tree.code == source
    assert tree.deep_equals(cst.parse_module(source))
    with pytest.raises(cst.CSTValidationError):
        cst.Name("not a name")
    with pytest.raises(cst.ParserSyntaxError):
        engine.parse("def f(:\n")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("still not a name")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_statement_ranges_equal_the_whole_module_ranges(newline):
    """Positions from each node's own top-level statement (started at the
    line Python's tree gives) are those of generating the whole module --
    through header comments, decorators with comments between them, `;`
    lines, a block's trailing comments and data blocks."""
    import ast

    from nanlint.engine import subtree
    from nanlint.positions import compute_statement_ranges, line_starts, statement_lines

    source = newline.join([
        "# header", "", "import torch; import math", "", "# lead", "@dec  # one", "# between",
        "@other(1,", "       2)", "def f(x):", "    y = x.exp() + 1e-8", "    # trailing, indented", "",
        "# dedented comment", "class A:", "    z = [", "        1, 2,", "    ]", "", "if x: y = (1 +", "  2)",
        "t = torch.log(x)  # c", "",
    ])
    module = engine.parse(source)
    nodes = [n for n in subtree(module) if n is not module]
    top = {stmt: i for i, stmt in enumerate(module.body)}
    owners = {}
    for i, stmt in enumerate(module.body):
        for n in subtree(stmt):
            owners[n] = i
    starts = line_starts(source)
    lines = statement_lines(module, ast.parse(source))
    assert lines is not None and len(lines) == len(top)
    got = compute_statement_ranges(module, nodes, starts, source, owners, lines)
    want = compute_ranges(module, nodes, starts)
    assert got is not None and set(got) == set(want)
    for node in nodes:
        g, w = got[node], want[node]
        assert (g.start, g.end, g.inner_start, g.inner_end) == (w.start, w.end, w.inner_start, w.inner_end)
    # a start that does not line up with the text is refused, never used
    wrong = [line + 1 for line in lines]
    assert compute_statement_ranges(module, nodes, starts, source, owners, wrong) is None


def test_nodes_hash_by_identity():
    """Node hashing is identity, as libcst defines it, for every node class."""
    from nanlint.engine import subtree

    source = "x = f(a)[1] + g(b)\n"
    one, two = engine.parse(source), engine.parse(source)
    nodes = list(subtree(one)) + list(subtree(two))
    assert len({id(n) for n in nodes}) == len(nodes) == len(set(nodes))
    assert all(hash(n) == object.__hash__(n) for n in nodes)
    assert one.body[0] != two.body[0] and one.body[0] == one.body[0]
    table = {n: i for i, n in enumerate(nodes)}
    assert all(table[n] == i for i, n in enumerate(nodes))


def test_the_walk_reads_the_children_the_analysis_computed():
    import libcst as cst

    from nanlint.analysis.scopes import Scopes

    module = cst.parse_module(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x, *, eps=1e-6):\n"
        "        y = [t.exp() for t in x if t]\n"
        "        return lambda z: (y, z @ x, {**z})\n"
    )

    def order(kids):
        seen = []
        on = {cls: [lambda n: seen.append(("in", n))] for cls in _node_types(module)}
        off = {cls: [lambda n: seen.append(("out", n))] for cls in _node_types(module)}
        walk(module, on, off, kids)
        return seen

    kids = Scopes(module).kids
    assert len(kids) > 50 and all(isinstance(v, list) for v in kids.values())
    assert order(kids) == order(None) == order({})


def _node_types(module):
    from nanlint.engine import subtree

    return {type(n) for n in subtree(module)}
