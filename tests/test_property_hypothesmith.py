"""Property tests over Python source generated from the grammar (hypothesmith):
for any valid program, checking does not raise, and `fix` output parses,
compiles and is idempotent. A rule's example is appended to each generated
program so that the rules (and their fixes) actually run on it: a program
without torch calls never reaches libcst (no rule's text trigger matches)."""

from __future__ import annotations

import ast
import warnings

import libcst as cst
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

hypothesmith = pytest.importorskip("hypothesmith")

from nanlint.dtypes import DTYPES  # noqa: E402
from nanlint.engine import lint_source  # noqa: E402
from nanlint.fix import fix_text  # noqa: E402
from nanlint.registry import all_rules  # noqa: E402

RULES = list(all_rules())
SNIPPETS = [ex.source() for r in RULES for ex in r.invalid]


def _lint(text: str):
    result = lint_source(text, "gen.py", RULES, [DTYPES["float16"]], {})
    return result.findings, result.errors


def _valid(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # generated code is full of SyntaxWarnings
            compile(text, "gen.py", "exec")
        cst.parse_module(text)
    except Exception:
        return False
    return True


@st.composite
def programs(draw):
    generated = draw(hypothesmith.from_grammar())
    snippet = draw(st.sampled_from(SNIPPETS))
    if draw(st.booleans()):
        source = generated.rstrip("\\\n ") + "\n" + snippet
    else:
        source = snippet + "\n" + generated
    assume(_valid(source))
    return source


# hypothesmith spends about a second generating each program here: few examples,
# so that the file stays well under 30 s.
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]


@settings(max_examples=30, deadline=None, suppress_health_check=HEALTH)
@given(hypothesmith.from_grammar())
def test_check_never_raises_on_generated_programs(source):
    findings, errors = _lint(source)
    assert errors == []
    assert all(f.code != "NL000" for f in findings) or not _valid(source)


@settings(max_examples=10, deadline=None, suppress_health_check=HEALTH)
@given(programs())
def test_fix_output_parses_compiles_and_is_idempotent(source):
    findings, errors = _lint(source)
    assert errors == []
    assert findings, "the appended rule example must be found"
    outcome = fix_text(source, _lint, unsafe=True)
    assert outcome.errors == []
    fixed = outcome.text
    ast.parse(fixed)
    cst.parse_module(fixed)
    assert _valid(fixed)
    assert fix_text(fixed, _lint, unsafe=True).text == fixed
