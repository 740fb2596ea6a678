"""Command line: thin wrappers that parse flags and call the core."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import click

from . import __version__

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

EXIT_CODES_HELP = """\b
Exit codes:
  0  no findings
  1  findings were reported
  2  usage, configuration or I/O error (bad flag or config, unreadable file)
"""


def _split(values: Sequence[str]) -> List[str]:
    out: List[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def _error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _load_selection(
    config: Optional[str],
    first_path: Optional[Path],
    select: Sequence[str],
    extend_select: Sequence[str],
    ignore: Sequence[str],
    target_dtypes: Sequence[str],
):
    from .config import ConfigError, check_dtypes, check_selectors, resolve_settings
    from .runner import Selection

    try:
        settings = resolve_settings(Path(config) if config else None, first_path)
        sel = check_selectors(_split(select), "--select") if select else None
        ext = check_selectors(_split(extend_select), "--extend-select")
        ign = check_selectors(_split(ignore), "--ignore")
        dts = check_dtypes(_split(target_dtypes), "--target-dtype") if target_dtypes else None
        return Selection.build(settings, sel, ext, ign, dts)
    except ConfigError as exc:
        _error(str(exc))
        sys.exit(EXIT_ERROR)


def selection_options(func):
    """The rule-selection flags shared by every command that runs rules."""
    options = [
        click.option("--select", multiple=True, metavar="CODES",
                     help="Rules to enable, replacing the configured selection: codes, prefixes (NL00) or ALL. Comma-separated or repeated."),
        click.option("--extend-select", multiple=True, metavar="CODES",
                     help="Rules to enable on top of the selection (e.g. the opt-in NL005)."),
        click.option("--ignore", multiple=True, metavar="CODES",
                     help="Rules to disable."),
        click.option("--target-dtype", "target_dtypes", multiple=True, metavar="DTYPE",
                     help="Low-precision dtype(s) to check for: float16 (default), bfloat16."),
        click.option("--config", type=click.Path(dir_okay=False), metavar="PATH",
                     help="Configuration file (pyproject.toml with [tool.nanlint], or nanlint.toml). Default: the closest one above the first path."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nanlint")
def main() -> None:
    """nanlint: find the numerical hazards that turn float16 PyTorch code into NaN/Inf."""


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@selection_options
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="How findings are printed.")
@click.option("--statistics", is_flag=True, help="Print the number of findings per rule instead of each finding.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings are reported (errors still exit 2).")
@click.option("--stdin-filename", metavar="PATH", help="The name of the file read from stdin (`-`), for messages and per-file-ignores.")
def check(
    paths: Tuple[str, ...],
    select: Tuple[str, ...],
    extend_select: Tuple[str, ...],
    ignore: Tuple[str, ...],
    target_dtypes: Tuple[str, ...],
    config: Optional[str],
    output_format: str,
    statistics: bool,
    exit_zero: bool,
    stdin_filename: Optional[str],
) -> None:
    """Check PATHS (files or directories; default: .) for numerical hazards.

    `-` reads the source from stdin.
    """
    from .files import ReadError, decode
    from .report import FORMATS
    from .report.text import render_statistics
    from .runner import check_paths, check_text

    path_list = [p for p in paths] or ["."]
    first = None
    for p in path_list:
        if p != "-":
            first = Path(p)
            break
    if first is None and stdin_filename:
        first = Path(stdin_filename)
    selection = _load_selection(config, first, select, extend_select, ignore, target_dtypes)

    findings = []
    errors: List[str] = []
    if "-" in path_list:
        name = stdin_filename or "-"
        try:
            source = decode(sys.stdin.buffer.read())
            f, e = check_text(source.text, name, Path(name), selection)
            findings.extend(f)
            errors.extend(e)
        except ReadError as exc:
            errors.append(f"{name}: {exc}")
    file_paths = [Path(p) for p in path_list if p != "-"]
    if file_paths:
        results, problems = check_paths(file_paths, selection)
        errors.extend(problems)
        for result in results:
            findings.extend(result.findings)
            errors.extend(result.errors)
    findings.sort(key=lambda f: f.sort_key())

    for message in errors:
        _error(message)
    if statistics and output_format == "text":
        click.echo(render_statistics(findings), nl=False)
    else:
        click.echo(FORMATS[output_format](findings), nl=False)
    if errors:
        sys.exit(EXIT_ERROR)
    if findings and not exit_zero:
        sys.exit(EXIT_FINDINGS)
    sys.exit(EXIT_CLEAN)


@main.command()
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every rule: code, name, default on/off, fix.")
def rule(code: Optional[str], show_all: bool) -> None:
    """Show the documentation of rule CODE (e.g. NL002), or list all rules."""
    from .registry import all_rules, rules_by_code

    if show_all or code is None:
        rows = [("code", "name", "default", "fix", "summary")]
        for r in all_rules():
            rows.append((r.code, r.name, "on" if r.default_enabled else "off",
                         r.fix_applicability or "-", r.summary))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            click.echo("  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4])
        return
    rules = rules_by_code()
    found = rules.get(code.upper())
    if found is None:
        _error(f"unknown rule `{code}` (see `nanlint rule --all`)")
        sys.exit(EXIT_ERROR)
    fix = found.fix_applicability or "none"
    header = f"{found.code} {found.name}\n\n{found.summary}\n\nDefault: {'on' if found.default_enabled else 'off (opt-in)'}. Fix: {fix}.\n"
    click.echo(header + "\n" + found.documentation())


if __name__ == "__main__":  # pragma: no cover
    main()
