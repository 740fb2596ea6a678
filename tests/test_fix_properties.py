"""Property tests: whatever the file, `fix` output parses and a second fix
changes nothing. Files are generated from every rule's examples (so fixes of
different rules meet in one file, indented, with CRLF or a BOM), and sampled
from the installed torch and transformers sources."""

from __future__ import annotations

import ast
import importlib.util
import textwrap
from pathlib import Path

import libcst as cst
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanlint.dtypes import DTYPES
from nanlint.engine import lint_source
from nanlint.fix import fix_text
from nanlint.registry import all_rules

RULES = list(all_rules())
SNIPPETS = [ex.source() for r in RULES for ex in list(r.invalid) + list(r.valid)]


def _lint(text: str):
    result = lint_source(text, "gen.py", RULES, [DTYPES["float16"]], {})
    return result.findings, result.errors


def _fix(text: str) -> str:
    outcome = fix_text(text, _lint, unsafe=True)
    assert outcome.errors == []
    return outcome.text


def _parses(text: str) -> None:
    ast.parse(text)
    cst.parse_module(text)


@st.composite
def programs(draw):
    parts = []
    for snippet in draw(st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=5)):
        if draw(st.booleans()):  # inside a function body
            snippet = "def generated_%d():\n%s    pass\n" % (len(parts), textwrap.indent(snippet, "    "))
        if draw(st.booleans()):
            snippet = "# a comment line\n\n" + snippet
        parts.append(snippet)
    text = "\n".join(parts)
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_fix_of_generated_programs_parses_and_is_idempotent(text):
    _parses(text)
    fixed = _fix(text)
    _parses(fixed)
    assert _fix(fixed) == fixed
    if "\r\n" in text:
        assert "\n" not in fixed.replace("\r\n", "")


def _corpus():
    files = []
    for name in ("torch", "transformers"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
            files.extend(sorted(root.rglob("*.py")))
    return files


CORPUS = _corpus()


@pytest.mark.skipif(not CORPUS, reason="torch/transformers sources not installed")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS or [Path(__file__)]))
def test_fix_of_real_files_parses_and_is_idempotent(path):
    text = path.read_bytes().decode("utf-8")
    fixed = _fix(text)
    if fixed != text:
        _parses(fixed)
    assert _fix(fixed) == fixed


@pytest.mark.skipif(not CORPUS, reason="torch/transformers sources not installed")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS or [Path(__file__)]))
def test_text_triggers_never_hide_a_finding(path):
    """Skipping files by text triggers is only an optimisation: with triggers
    switched off, a real file gets exactly the same findings."""
    from nanlint.engine import lint_source as lint

    text = path.read_bytes().decode("utf-8")
    dtypes = [DTYPES["float16"]]
    with_triggers = lint(text, "f.py", RULES, dtypes, {}).findings
    untriggered = [type(r.__name__, (r,), {"triggers": ()}) for r in RULES]
    without = lint(text, "f.py", untriggered, dtypes, {}).findings
    assert with_triggers == without
