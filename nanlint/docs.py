"""The README's rule table, generated from the rules themselves.

``python -m nanlint.docs --write`` rewrites the table between the
``rules-table`` markers of README.md; the tests fail when it is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .registry import documented_rules

START = "<!-- rules-table:start -->"
END = "<!-- rules-table:end -->"


def rules_table() -> str:
    rows = ["| code | name | default | fix | summary |", "|---|---|---|---|---|"]
    for rule in documented_rules():
        rows.append(
            f"| {rule.code} | {rule.name} | {'on' if rule.default_enabled else 'off'} "
            f"| {rule.fix_applicability or '-'} | {rule.summary.replace('|', '/')} |"
        )
    return "\n".join(rows)


def update_readme(text: str) -> str:
    head, sep, rest = text.partition(START)
    if not sep:
        raise ValueError("README.md has no rules-table markers")
    _, sep2, tail = rest.partition(END)
    if not sep2:
        raise ValueError("README.md has no end marker for the rules table")
    return f"{head}{START}\n{rules_table()}\n{END}{tail}"


def main(argv: list) -> int:
    readme = Path(argv[1]) if len(argv) > 1 and not argv[1].startswith("-") else Path("README.md")
    text = readme.read_text(encoding="utf-8")
    new = update_readme(text)
    if "--write" in argv:
        readme.write_text(new, encoding="utf-8")
        return 0
    print(rules_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
