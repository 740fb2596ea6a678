"""Property test: whatever the notebook (cells built from every rule's
examples, IPython lines mixed in, markdown and outputs around them, written
with any indentation, as lists of lines or as strings, escaped or not),
`fix` changes only the sources of code cells, its cells parse, the rest of
the JSON is byte-identical, and a second fix changes nothing."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanlint.config import Settings
from nanlint.notebook import _dedented, load
from nanlint.registry import all_rules
from nanlint.runner import Selection, check_notebook_text, fix_notebook_text

RULES = list(all_rules())
SNIPPETS = [ex.source() for r in RULES for ex in list(r.invalid) + list(r.valid)]
IPYTHON = ["%matplotlib inline", "!pip install -q torch", "files = !ls", "torch.exp?", "%load_ext autoreload",
           "pip install -q torch", "ls data/raw"]
SELECTION = Selection.build(Settings(select=["ALL"]))


@st.composite
def cells(draw):
    kind = draw(st.sampled_from(["code", "code", "code", "markdown", "bash"]))
    if kind == "markdown":
        text = "# Notes\n\nSee `torch.exp(x)` and é."
        return {"cell_type": "markdown", "metadata": {}, "source": text}
    if kind == "bash":
        text = "%%bash\necho 1e-12"
    else:
        lines = draw(st.sampled_from(SNIPPETS)).splitlines()
        if draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(IPYTHON)))
        if draw(st.booleans()):
            lines.insert(0, "%%time")
        elif draw(st.booleans()):  # a block pasted out of a function: IPython dedents it
            lines = ["    " + line if line.strip() else line for line in lines]
        text = "\n".join(lines) + draw(st.sampled_from(["", "\n"]))
    return {"cell_type": "code", "execution_count": draw(st.one_of(st.none(), st.integers(1, 9))),
            "metadata": {"tags": ["t"]} if draw(st.booleans()) else {},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": ["ok\n"]}], "source": text}


@st.composite
def notebooks(draw):
    cell_list = draw(st.lists(cells(), min_size=1, max_size=5))
    as_lists = draw(st.booleans())
    for cell in cell_list:
        if as_lists:
            text = cell["source"]
            cell["source"] = [line for line in text.splitlines(keepends=True)]
    nb = {"cells": cell_list, "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    indent = draw(st.sampled_from([None, 1, 2, 4]))
    return json.dumps(nb, indent=indent, ensure_ascii=draw(st.booleans())) + draw(st.sampled_from(["", "\n"]))


def _code(nb_json: str):
    return [c for c in json.loads(nb_json)["cells"] if c["cell_type"] == "code"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notebooks())
def test_fix_touches_only_cell_sources_and_is_idempotent(raw):
    path = Path("gen.ipynb")
    findings, errors = check_notebook_text(raw, "gen.ipynb", path, SELECTION)
    assert errors == []
    outcome, _ = fix_notebook_text(raw, "gen.ipynb", path, SELECTION, unsafe=True)
    new = outcome.text
    old_data, new_data = json.loads(raw), json.loads(new)
    for a, b in zip(old_data["cells"], new_data["cells"]):
        b_source = b["source"]
        b["source"] = a["source"]
        assert type(b_source) is type(a["source"])
    assert new_data == old_data
    # outside the source values, the bytes are the same
    nb_old, nb_new = load(raw, "a"), load(new, "b")
    pieces_old = [raw[c.span[1]:d.span[0]] for c, d in zip(nb_old.cells, nb_old.cells[1:])]
    pieces_new = [new[c.span[1]:d.span[0]] for c, d in zip(nb_new.cells, nb_new.cells[1:])]
    assert pieces_old == pieces_new
    if nb_old.cells:
        assert raw[: nb_old.cells[0].span[0]] == new[: nb_new.cells[0].span[0]]
        assert raw[nb_old.cells[-1].span[1]:] == new[nb_new.cells[-1].span[1]:]
    # every fixed code cell still parses (IPython lines aside), and nothing is left to fix
    for cell in nb_new.cells:
        if cell.error is None:
            ast.parse(_dedented(cell.virtual))
    again, _ = fix_notebook_text(new, "gen.ipynb", path, SELECTION, unsafe=True)
    assert again.text == new
    assert {(f.cell, f.code) for f in outcome.remaining} == {
        (f.cell, f.code) for f in check_notebook_text(new, "gen.ipynb", path, SELECTION)[0]}


def test_an_import_added_above_an_indented_first_cell_takes_its_indentation():
    """IPython dedents a cell by its first line's indentation: an added import
    at column 0 above indented lines would break the cell."""
    from nanlint.notebook import split_cells

    nb_json = json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                     "source": "    import torch\n    y = torch.exp(x)\n"}],
                          "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    nb = load(nb_json, "i.ipynb")
    assert nb.virtual_source().startswith("if True:  # nanlint-cell 1 ")
    cell = split_cells(nb, "import math\n" + nb.virtual_source())[1]
    assert cell == "    import math\n    import torch\n    y = torch.exp(x)\n"
    ast.parse(_dedented(cell))
