"""``nanlint check --show-settings``: the settings in force, as TOML, with
where each value came from (the config file, the command line, or the
default) and the rules they select."""

from __future__ import annotations

import json
from typing import Any, List

from .config import DEFAULT_EXCLUDE
from .runner import Selection


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def render_settings(selection: Selection) -> str:
    s = selection.settings
    origins = s.origins
    where = f"{s.source}" if s.source is not None else "no configuration file found: defaults"
    lines: List[str] = [
        f"# settings from: {where}",
        f"# relative paths are matched against: {s.root}",
        "",
    ]
    extend_select = list(s.extend_select)
    ignore = list(s.ignore)
    if s.select is None:
        lines.append("# select: not set, so every rule that is on by default")
    rows = [
        ("select", s.select),
        ("extend-select", extend_select),
        ("ignore", ignore),
        ("target-dtypes", [d.name for d in selection.dtypes]),
        ("exclude", list(s.exclude) if s.exclude is not None else list(DEFAULT_EXCLUDE)),
        ("extend-exclude", list(s.extend_exclude)),
        ("per-file-ignores", dict(s.per_file_ignores)),
        ("respect-gitignore", s.respect_gitignore),
        ("force-exclude", s.force_exclude),
        ("cache-dir", s.cache_dir or ".nanlint_cache"),
        ("min-confidence", s.min_confidence),
        ("max-file-size", s.max_file_size),
    ]
    for key, value in rows:
        if value is None:
            continue
        origin = origins.get(key, "default")
        lines.append(f"{key} = {_toml(value)}  # {origin}")
    lines.append("")
    lines.append("# the rules in force (after --select/--extend-select/--ignore and target dtypes)")
    lines.append(f"rules = {_toml([i.code for i in selection.infos])}")
    for code, options in sorted(s.rule_options.items()):
        lines.append("")
        lines.append(f"[{code}]  # config")
        for opt, value in options.items():
            lines.append(f"{opt} = {_toml(value)}")
    return "\n".join(lines) + "\n"
