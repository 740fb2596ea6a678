"""Rule metadata without importing the rules: the index must match the rules,
a stale one must be ignored, and a run answered from the cache must not import
libcst (it was 0.16 s of a 0.5 s warm run)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import nanlint._rule_index as index
from nanlint import registry
from nanlint.dtypes import DTYPES
from nanlint.registry import RuleInfo, all_rules, rule_infos, rules_digest, select_infos, select_rules


@pytest.fixture
def fresh_infos():
    rule_infos.cache_clear()
    yield
    rule_infos.cache_clear()


def test_the_index_is_current():
    # fails after a rule's metadata changes: run `python -m nanlint.registry`
    assert index.DIGEST == rules_digest(), "nanlint/_rule_index.py is stale: run `python -m nanlint.registry`"
    assert tuple(RuleInfo(**e) for e in index.RULES) == tuple(RuleInfo.of(r) for r in all_rules())


def test_a_stale_index_is_ignored(monkeypatch, fresh_infos):
    wrong = [dict(e, default_enabled=not e["default_enabled"]) for e in index.RULES]
    monkeypatch.setattr(index, "RULES", tuple(wrong))
    assert tuple(RuleInfo(**e) for e in index.RULES) != tuple(RuleInfo.of(r) for r in all_rules())
    monkeypatch.setattr(index, "DIGEST", "0" * 64)  # the rules changed since it was written
    assert rule_infos() == tuple(RuleInfo.of(r) for r in all_rules())


def test_a_current_index_is_what_selection_reads(monkeypatch, fresh_infos):
    # the same digest with other contents: proves the index, not the rules, answered
    wrong = [dict(e, default_enabled=e["code"] != "NL002" and e["default_enabled"]) for e in index.RULES]
    monkeypatch.setattr(index, "RULES", tuple(wrong))
    assert "NL002" not in [i.code for i in select_infos(None)]
    assert "NL002" in [i.code for i in select_infos(["NL002"])]


def test_infos_select_the_same_rules_as_the_classes():
    for select, extend, ignore in ((None, (), ()), (["ALL"], (), ["NL1"]), (["NL00"], ["NL005"], ["NL002"])):
        assert [i.code for i in select_infos(select, extend, ignore)] == [
            r.code for r in select_rules(select, extend, ignore)]
    for dtypes in ((DTYPES["float16"],), (DTYPES["bfloat16"],)):
        assert [RuleInfo.of(r).active(dtypes) for r in all_rules()] == [r.active(dtypes) for r in all_rules()]
    assert not RuleInfo.of(registry.load([i for i in rule_infos() if i.code == "NL001"])[0]).active(
        (DTYPES["bfloat16"],))


def test_a_run_answered_from_the_cache_does_not_import_libcst(tmp_path):
    (tmp_path / "m.py").write_text("import torch\ny = torch.exp(q.half() @ k.mT)  # noqa: NL999\n")
    (tmp_path / "clean.py").write_text("import torch\nfrom m import y\nz = y + 1\n")
    code = textwrap.dedent(
        """
        import sys
        from nanlint.cli import main
        sys.argv = ['nanlint', 'check', '.']
        try:
            main()
        except SystemExit as exc:
            print('exit', exc.code, 'libcst' in sys.modules)
        """
    )
    runs = [subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
            for _ in range(2)]
    assert "exit 1 True" in runs[0].stdout, runs[0].stderr  # linted: the rules ran
    assert "exit 1 False" in runs[1].stdout, runs[1].stderr  # answered from the cache
    assert runs[0].stdout.replace("True", "") == runs[1].stdout.replace("False", "")
    assert runs[0].stderr == runs[1].stderr and "NL999" in runs[1].stderr  # the noqa warning still comes
