"""Every rule's own documented examples are executable: valid ones stay clean,
invalid ones are reported, and their fixes give exactly the documented text,
compile, and leave nothing for the rule to report."""

from __future__ import annotations

import pytest

from nanlint.registry import all_rules

from helpers import fix_all, lint

CASES_VALID = [(r, i, v) for r in all_rules() for i, v in enumerate(r.valid)]
CASES_INVALID = [(r, i, v) for r in all_rules() for i, v in enumerate(r.invalid)]


def _id(case):
    rule, index, _ = case
    return f"{rule.code}-{index}"


@pytest.mark.parametrize("case", CASES_VALID, ids=[_id(c) for c in CASES_VALID])
def test_valid_example_is_clean(case):
    rule, _, example = case
    source = example.source()
    compile(source, "<example>", "exec")
    assert lint(source, [rule.code]) == []


@pytest.mark.parametrize("case", CASES_INVALID, ids=[_id(c) for c in CASES_INVALID])
def test_invalid_example_is_reported_and_fixed(case):
    rule, _, example = case
    source = example.source()
    compile(source, "<example>", "exec")
    found = lint(source, [rule.code])
    assert len(found) == example.count, found
    for finding in found:
        assert finding.code == rule.code and finding.name == rule.name
        assert finding.message
    expected = example.fixed_source()
    if expected is None:
        return
    fixed = fix_all(source, [rule.code])
    assert fixed == expected
    compile(fixed, "<fixed>", "exec")
    remaining = [f for f in lint(fixed, [rule.code]) if f.fix is not None]
    assert remaining == []


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.code)
def test_rule_metadata_and_docs(rule):
    assert rule.name and rule.name == rule.name.lower() and " " not in rule.name
    assert rule.summary and "\n" not in rule.summary
    doc = rule.documentation()
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix safety"):
        assert heading in doc, f"{rule.code} docs lack {heading!r}"
    assert rule.valid and rule.invalid, "every rule documents valid and invalid examples"
    assert rule.triggers, "every rule declares text triggers"
    from nanlint.engine import may_trigger

    for example in rule.invalid:
        assert may_trigger(rule, example.source()), "an invalid example lacks every trigger"
