"""``[tool.nanlint]`` in ``pyproject.toml`` (or a ``nanlint.toml``), validated.

Every key and code is checked: a typo is an error (exit 2), never silently
ignored.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

from .dtypes import DTYPES
from .registry import infos_by_code, known_code

#: in order of preference within one directory: a dedicated file beats pyproject.toml (as in ruff)
CONFIG_FILES = (".nanlint.toml", "nanlint.toml", "pyproject.toml")

DEFAULT_EXCLUDE = (
    ".git", ".hg", ".svn", ".bzr", ".venv", "venv", ".tox", ".nox", ".eggs",
    "*.egg-info", "__pycache__", "build", "dist", "node_modules", "site-packages",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".nanlint_cache", ".ipynb_checkpoints",
)


class ConfigError(Exception):
    """A configuration problem the user must fix; reported with exit code 2."""


@dataclass
class Settings:
    select: Optional[List[str]] = None
    extend_select: List[str] = field(default_factory=list)
    ignore: List[str] = field(default_factory=list)
    exclude: Optional[List[str]] = None
    extend_exclude: List[str] = field(default_factory=list)
    per_file_ignores: Dict[str, List[str]] = field(default_factory=dict)
    target_dtypes: List[str] = field(default_factory=lambda: ["float16"])
    rule_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: where cached findings live (relative to ``root``); default .nanlint_cache
    cache_dir: Optional[str] = None
    #: findings below this confidence are not shown ("high", "medium" or "low")
    min_confidence: str = "high"
    #: larger files are skipped with a warning (0: no limit)
    max_file_size: int = 1_048_576
    #: skip what git ignores when searching directories
    respect_gitignore: bool = True
    #: apply exclude/extend-exclude/.gitignore to files named on the command line too
    force_exclude: bool = False
    #: the file the settings came from (None: defaults)
    source: Optional[Path] = None
    #: the directory that relative patterns are matched against
    root: Path = field(default_factory=Path.cwd)
    #: where each non-default value came from: key -> "config" or "command line"
    origins: Dict[str, str] = field(default_factory=dict)
    #: problems the user should hear about that do not stop the run
    warnings: List[str] = field(default_factory=list)

    @property
    def excludes(self) -> Tuple[str, ...]:
        base = DEFAULT_EXCLUDE if self.exclude is None else tuple(self.exclude)
        return tuple(base) + tuple(self.extend_exclude)


def _string_list(key: str, value: Any, where: str) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of strings")
    return list(value)


def check_selectors(selectors: Sequence[str], where: str) -> List[str]:
    out = []
    for s in selectors:
        s = s.strip().upper()
        if not s:
            continue
        if not known_code(s):
            raise ConfigError(f"{where}: unknown rule selector `{s}` (see `nanlint rule --all`)")
        out.append(s)
    return out


def check_confidence(value: Any, where: str) -> str:
    from .finding import CONFIDENCES

    if not isinstance(value, str) or value.lower() not in CONFIDENCES:
        raise ConfigError(f"{where}: `min-confidence` must be one of: {', '.join(reversed(CONFIDENCES))}")
    return value.lower()


def check_dtypes(dtypes: Sequence[str], where: str) -> List[str]:
    out = []
    for d in dtypes:
        name = d.strip().lower().replace("torch.", "")
        name = {"half": "float16", "fp16": "float16", "bf16": "bfloat16"}.get(name, name)
        if name not in DTYPES:
            raise ConfigError(
                f"{where}: unknown target dtype `{d}` (expected one of: {', '.join(DTYPES)})"
            )
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"{where}: `target-dtypes` must name at least one dtype")
    return out


def parse_table(table: Mapping[str, Any], where: str, root: Path) -> Settings:
    settings = Settings(root=root)
    rules = infos_by_code()
    for key, value in table.items():
        settings.origins[key] = "config"
        if key == "select":
            settings.select = check_selectors(_string_list(key, value, where), where)
        elif key == "extend-select":
            settings.extend_select = check_selectors(_string_list(key, value, where), where)
        elif key == "ignore":
            settings.ignore = check_selectors(_string_list(key, value, where), where)
        elif key == "exclude":
            settings.exclude = _string_list(key, value, where)
        elif key == "extend-exclude":
            settings.extend_exclude = _string_list(key, value, where)
        elif key == "cache-dir":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: `cache-dir` must be a non-empty string")
            settings.cache_dir = value
        elif key == "min-confidence":
            settings.min_confidence = check_confidence(value, where)
        elif key == "max-file-size":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}: `max-file-size` must be a number of bytes (0: no limit)")
            settings.max_file_size = value
        elif key in ("respect-gitignore", "force-exclude"):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: `{key}` must be true or false")
            setattr(settings, key.replace("-", "_"), value)
        elif key == "target-dtypes":
            settings.target_dtypes = check_dtypes(_string_list(key, value, where), where)
        elif key == "per-file-ignores":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: `per-file-ignores` must be a table of glob = [codes]")
            for pattern, codes in value.items():
                settings.per_file_ignores[pattern] = check_selectors(
                    _string_list(f"per-file-ignores.{pattern}", codes, where), where
                )
        elif key.upper() in rules:
            rule = rules[key.upper()]
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: `[{key}]` must be a table of options")
            opts = {}
            for opt, opt_value in value.items():
                if opt not in rule.options:
                    allowed = ", ".join(sorted(rule.options)) or "none"
                    raise ConfigError(
                        f"{where}: unknown option `{opt}` for {rule.code} (allowed: {allowed})"
                    )
                default = rule.options[opt]
                if isinstance(default, bool) != isinstance(opt_value, bool) or (
                    isinstance(default, (int, float))
                    and not isinstance(default, bool)
                    and not isinstance(opt_value, (int, float))
                ) or (isinstance(default, str) and not isinstance(opt_value, str)) or (
                    isinstance(default, list) and not isinstance(opt_value, list)
                ):
                    raise ConfigError(
                        f"{where}: option `{opt}` of {rule.code} must be of type {type(default).__name__}"
                    )
                opts[opt] = opt_value
            settings.rule_options[rule.code] = opts
        else:
            raise ConfigError(f"{where}: unknown key `{key}` in [tool.nanlint]")
    return settings


def load_file(path: Path) -> Settings:
    """Settings from one file; a pyproject.toml without [tool.nanlint] gives defaults."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("nanlint", {})
        where = f"{path} [tool.nanlint]"
    else:
        table = data.get("tool", {}).get("nanlint", data) if "tool" in data else data
        where = str(path)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    settings = parse_table(table, where, path.parent.resolve())
    settings.source = path
    return settings


def _has_table(path: Path) -> bool:
    if path.name != "pyproject.toml":
        return True
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return "tool.nanlint" in text


def find_configs(start: Path) -> List[Path]:
    """The config files of the closest directory at or above ``start`` that
    has one, in order of preference (a pyproject.toml counts only when it has
    a [tool.nanlint] table)."""
    try:
        here = start.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        here = Path(os.path.abspath(start))
    if not here.is_dir():
        here = here.parent
    for directory in (here, *here.parents):
        found = [directory / name for name in CONFIG_FILES
                 if (directory / name).is_file() and _has_table(directory / name)]
        if found:
            return found
    return []


def resolve_settings(config: Optional[Path], first_path: Optional[Path]) -> Settings:
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file not found: {config}")
        return load_file(config)
    found = find_configs(first_path if first_path is not None else Path.cwd())
    if not found:
        return Settings()
    settings = load_file(found[0])
    for other in found[1:]:
        what = f"{other.name} [tool.nanlint]" if other.name == "pyproject.toml" else other.name
        settings.warnings.append(f"{found[0]} is used; {what} in the same directory is ignored")
    return settings
