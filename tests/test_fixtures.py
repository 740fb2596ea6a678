"""fixtures/<CODE>/*.py and fixtures/models/*.py: every line marked
`# expect: CODE` is reported with that code at high confidence (`# expect:
CODE (medium)` / `(low)`: at that confidence), and nothing else is reported
(negatives stay clean), with the configuration in fixtures/pyproject.toml
(which opts into NL005)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from helpers import FIXTURES, ROOT, fix_all, fixture_files, lint, markers


def _check_fixtures():
    proc = subprocess.run(
        [sys.executable, "-m", "nanlint", "check", "--min-confidence", "low", "--output-format", "json", "fixtures"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout)


def test_fixture_markers_match_findings_exactly():
    findings = _check_fixtures()
    got = defaultdict(set)
    for f in findings:
        got[f["path"].replace("\\", "/")].add((f["line"], f["code"], f["confidence"]))
    expected = {}
    # fixtures/models/: the `nanlint confirm` models (tests/test_confirm.py)
    for path in fixture_files() + sorted(FIXTURES.glob("models/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        expected[rel] = markers(path)
    files = set(expected) | set(got)
    mismatches = {
        name: {"missing": sorted(expected.get(name, set()) - got.get(name, set())),
               "unexpected": sorted(got.get(name, set()) - expected.get(name, set()))}
        for name in sorted(files)
        if expected.get(name, set()) != got.get(name, set())
    }
    assert mismatches == {}


def test_every_rule_has_positive_and_negative_fixtures():
    from nanlint.registry import all_rules

    for rule in all_rules():
        folder = FIXTURES / rule.code
        positives = list(folder.glob("positive*.py"))
        negatives = list(folder.glob("negative*.py"))
        assert positives and negatives, f"{rule.code} needs positive and negative fixtures"
        assert all(markers(p) for p in positives)
        assert not any(m for n in negatives for m in markers(n))


@pytest.mark.parametrize("path", [p for p in fixture_files() if p.name.startswith("positive")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_fixes_compile_and_resolve(path):
    code = path.parent.name
    source = path.read_text(encoding="utf-8")
    before = [f for f in lint(source, [code], path=path.name) if f.fix is not None]
    fixed = fix_all(source, [code], path=path.name)
    compile(fixed, str(path), "exec")
    after = [f for f in lint(fixed, [code], path=path.name) if f.fix is not None]
    assert after == []
    if before:
        assert fixed != source


PAIRS = sorted(p for p in FIXTURES.glob("NL*/*.fixed.py"))


@pytest.mark.parametrize("expected", PAIRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixed_fixture_pairs_match_exactly(expected):
    source_path = expected.with_name(expected.name.replace(".fixed.py", ".py"))
    code = expected.parent.name
    fixed = fix_all(source_path.read_text(encoding="utf-8"), [code], path=source_path.name)
    assert fixed == expected.read_text(encoding="utf-8")
    compile(fixed, str(expected), "exec")
    # nothing the fixes addressed is reported again
    assert [f for f in lint(fixed, [code]) if f.fix is not None] == []


def test_every_rule_with_a_fix_has_a_fixed_pair():
    from nanlint.registry import all_rules

    for rule in all_rules():
        if rule.fix_applicability:
            assert list((FIXTURES / rule.code).glob("*.fixed.py")), f"{rule.code} has no *.fixed.py pair"
