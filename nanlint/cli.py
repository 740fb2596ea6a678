"""Command line: thin wrappers that parse flags and call the core."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import click

from . import __version__

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0  no findings
  1  findings were reported
  2  usage, configuration or I/O error (bad flag or config, unreadable file)
  130  interrupted (Ctrl-C)
"""


def _split(values: Sequence[str]) -> List[str]:
    out: List[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def _error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _warning(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _load_selection(
    config: Optional[str],
    first_path: Optional[Path],
    select: Sequence[str],
    extend_select: Sequence[str],
    ignore: Sequence[str],
    target_dtypes: Sequence[str],
    **overrides,
):
    from .config import ConfigError, check_dtypes, check_selectors, resolve_settings
    from .runner import Selection

    try:
        settings = resolve_settings(Path(config) if config else None, first_path)
        for message in settings.warnings:
            _warning(message)
        if os.environ.get(CACHE_DIR_ENV) and overrides.get("cache_dir") is None:
            # the environment beats the config file; a relative path is relative to where nanlint runs
            settings.cache_dir = os.path.abspath(os.environ[CACHE_DIR_ENV])
            settings.origins["cache-dir"] = f"environment ({CACHE_DIR_ENV})"
        for key, value in overrides.items():
            if value is not None:  # a flag given on the command line beats the config
                setattr(settings, key, value)
                settings.origins[key.replace("_", "-")] = "command line"
        sel = check_selectors(_split(select), "--select") if select else None
        ext = check_selectors(_split(extend_select), "--extend-select")
        ign = check_selectors(_split(ignore), "--ignore")
        dts = check_dtypes(_split(target_dtypes), "--target-dtype") if target_dtypes else None
        # the command line joins the configuration: --select and --target-dtype
        # replace it, --extend-select and --ignore add to it
        for key, given in (("select", sel), ("extend-select", ext), ("ignore", ign), ("target-dtypes", dts)):
            if given:
                extends = key in ("extend-select", "ignore") and key in settings.origins
                settings.origins[key] = "config + command line" if extends else "command line"
        if sel:
            settings.select = sel
        if dts:
            settings.target_dtypes = dts
        settings.extend_select = list(settings.extend_select) + ext
        settings.ignore = list(settings.ignore) + ign
        return Selection.build(settings)
    except ConfigError as exc:
        _error(str(exc))
        sys.exit(EXIT_ERROR)


CACHE_DIR_ENV = "NANLINT_CACHE_DIR"


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
        click.option("--min-confidence", type=click.Choice(["high", "medium", "low"]), default=None,
                     help="Show findings at least this sure (default: high, or the `min-confidence` "
                          "setting): medium adds hazards that need a rare input, low adds those resting "
                          "on facts nanlint could not establish."),
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
    from .files import quiet_parse_warnings

    quiet_parse_warnings()


def output_options(func):
    options = [
        click.option("--output-format", type=click.Choice(["text", "json", "github", "sarif", "junit"]),
                     default="text", show_default=True,
                     help="How findings are printed: text, json, github (Actions annotations), "
                          "sarif (2.1.0, for code scanning) or junit (XML)."),
        click.option("--statistics", is_flag=True, help="Print the number of findings per rule instead of each finding."),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings are reported (errors still exit 2)."),
        click.option("--stdin-filename", metavar="PATH",
                     help="The name of the file read from stdin (`-`), for messages and per-file-ignores."),
        click.option("--no-cache", is_flag=True,
                     help="Do not read or write cached results (default: .nanlint_cache/, or the `cache-dir` setting)."),
        click.option("--cache-dir", type=click.Path(file_okay=False), metavar="PATH", default=None,
                     help=f"Where cached results live. Precedence: this flag, then ${CACHE_DIR_ENV}, then the "
                          "`cache-dir` setting, then .nanlint_cache/ next to the configuration file."),
        click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Worker processes (default: every available core). Output is the same for any N."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def discovery_options(func):
    options = [
        click.option("--respect-gitignore/--no-respect-gitignore", "respect_gitignore", default=None,
                     help="Skip files and folders that git ignores when searching directories "
                          "(default: on, or the `respect-gitignore` setting)."),
        click.option("--force-exclude", is_flag=True, default=None,
                     help="Apply exclude, extend-exclude and .gitignore to files named on the command "
                          "line too (pre-commit passes every changed file)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def fix_options(func):
    options = [
        click.option("--unsafe-fixes", is_flag=True,
                     help="Also apply fixes marked unsafe (they may change behaviour; see `nanlint rule CODE`)."),
        click.option("--diff", is_flag=True,
                     help="Print a unified diff of the fixes and write nothing; exit 1 if there is something to fix."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


FIX_EXIT_HELP = EXIT_CODES_HELP.replace(
    "1  findings were reported", "1  findings remain after fixing (with --diff: there is something to fix)"
).replace("130  interrupted (Ctrl-C)", "130  interrupted (SIGINT/SIGTERM): each file is either unchanged or fully fixed")


@main.command(epilog=EXIT_CODES_HELP, short_help="Check files, directories and notebooks for hazards.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@selection_options
@output_options
@discovery_options
@click.option("--fix", "apply_fix", is_flag=True, help="Apply safe fixes in place (as `nanlint fix`).")
@fix_options
@click.option("--show-settings", is_flag=True,
              help="Print the resolved settings, the file they came from and the rules in force, then exit.")
@click.option("--show-files", is_flag=True, help="Print the files that would be checked, then exit.")
def check(paths, select, extend_select, ignore, target_dtypes, config, output_format, statistics,
          exit_zero, stdin_filename, no_cache, cache_dir, jobs, respect_gitignore, force_exclude, apply_fix,
          unsafe_fixes, diff, show_settings, show_files, min_confidence) -> None:
    """Check PATHS (files, directories or notebooks; default: .) for numerical hazards.

    `-` reads the source from stdin.
    """
    overrides = _overrides(respect_gitignore, force_exclude, cache_dir, min_confidence)
    if show_settings or show_files:
        _show(paths, select, extend_select, ignore, target_dtypes, config, stdin_filename,
              show_settings, show_files, overrides)
    elif apply_fix or diff:
        _run_fix(paths, select, extend_select, ignore, target_dtypes, config, output_format,
                 exit_zero, stdin_filename, jobs, unsafe_fixes, diff, overrides)
    else:
        if unsafe_fixes:
            _warning("--unsafe-fixes does nothing without --fix or --diff (or use `nanlint fix --unsafe-fixes`)")
        from .report import STATISTICS

        if statistics and output_format not in STATISTICS:
            _error(f"--statistics works with --output-format {' or '.join(STATISTICS)}, not {output_format}")
            sys.exit(EXIT_ERROR)
        try:
            _run_check(paths, select, extend_select, ignore, target_dtypes, config, output_format,
                       statistics, exit_zero, stdin_filename, jobs, no_cache, overrides)
        except KeyboardInterrupt:
            _error("interrupted")
            sys.exit(EXIT_INTERRUPTED)


def _overrides(respect_gitignore, force_exclude, cache_dir, min_confidence) -> dict:
    """Settings given as flags (None: not given); a relative --cache-dir is
    relative to where nanlint runs, not to the configuration file."""
    return dict(respect_gitignore=respect_gitignore, force_exclude=force_exclude,
                cache_dir=os.path.abspath(cache_dir) if cache_dir else None, min_confidence=min_confidence)


@main.command(epilog=FIX_EXIT_HELP, short_help="Apply fixes in place, then report what remains.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@selection_options
@output_options
@discovery_options
@fix_options
def fix(paths, select, extend_select, ignore, target_dtypes, config, output_format, statistics,
        exit_zero, stdin_filename, no_cache, cache_dir, jobs, respect_gitignore, force_exclude, unsafe_fixes,
        diff, min_confidence) -> None:
    """Apply fixes to PATHS in place (default: .), then report what remains.

    Only safe fixes unless --unsafe-fixes. Files are re-parsed before they are
    written and replaced atomically; a fix whose result would not parse is
    dropped and reported. `-` reads stdin and prints the fixed source.
    """
    _run_fix(paths, select, extend_select, ignore, target_dtypes, config, output_format,
             exit_zero, stdin_filename, jobs, unsafe_fixes, diff,
             _overrides(respect_gitignore, force_exclude, cache_dir, min_confidence))


def _show(paths, select, extend_select, ignore, target_dtypes, config, stdin_filename,
          show_settings, show_files, overrides) -> None:
    from .runner import discover_files
    from .settings_view import render_settings

    path_list = list(paths) or ["."]
    selection = _load_selection(config, _first_path(path_list, stdin_filename), select,
                                extend_select, ignore, target_dtypes, **overrides)
    if show_settings:
        click.echo(render_settings(selection), nl=False)
    if show_files:
        files, problems = discover_files([Path(p) for p in path_list if p != "-"], selection.settings)
        for f in files:
            click.echo(str(f))
        for p, why in problems:
            _error(f"{p}: {why}")
        if problems:
            sys.exit(EXIT_ERROR)
    sys.exit(EXIT_CLEAN)


def _first_path(path_list: Sequence[str], stdin_filename: Optional[str]) -> Optional[Path]:
    for p in path_list:
        if p != "-":
            return Path(p)
    return Path(stdin_filename) if stdin_filename else None


def _run_check(paths, select, extend_select, ignore, target_dtypes, config, output_format,
               statistics, exit_zero, stdin_filename, jobs, no_cache=True, overrides=None) -> None:
    from .files import ReadError, decode
    from .report import FORMATS, STATISTICS
    from .runner import check_notebook_text, check_paths, check_text, decode_notebook, default_jobs, is_notebook

    path_list = list(paths) or ["."]
    selection = _load_selection(config, _first_path(path_list, stdin_filename), select,
                                extend_select, ignore, target_dtypes, **(overrides or {}))
    if not no_cache:
        selection.enable_cache()
    findings = []
    errors: List[str] = []
    warnings: List[str] = []
    if "-" in path_list:
        name = stdin_filename or "-"
        try:
            data = sys.stdin.buffer.read()
            if is_notebook(Path(name)):
                f, e = check_notebook_text(decode_notebook(data), name, Path(name), selection)
            else:
                f, e = check_text(decode(data).text, name, Path(name), selection)
            findings.extend(f)
            errors.extend(e)
        except ReadError as exc:
            errors.append(f"{name}: {exc}")
    file_paths = [Path(p) for p in path_list if p != "-"]
    if file_paths:
        results, problems = check_paths(file_paths, selection, jobs or default_jobs())
        errors.extend(problems)
        for result in results:
            findings.extend(result.findings)
            errors.extend(result.errors)
            warnings.extend(result.warnings)
    if selection.cache is not None and selection.cache.problem:
        warnings.insert(0, selection.cache.problem)
    findings.sort(key=lambda f: f.sort_key())

    for message in errors:
        _error(message)
    for message in warnings:
        _warning(message)
    if output_format != "text" or findings or not errors:  # no "All checks passed!" after an error
        click.echo((STATISTICS if statistics else FORMATS)[output_format](findings), nl=False)
    if errors:
        sys.exit(EXIT_ERROR)
    if findings and not exit_zero:
        sys.exit(EXIT_FINDINGS)
    sys.exit(EXIT_CLEAN)


def _run_fix(*args) -> None:
    """Fix, turning SIGTERM into the same clean stop as Ctrl-C: the write in
    progress either completes its rename or removes its temp file, so every
    file is left fully old or fully new."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        _fix_paths_and_report(*args)
    except KeyboardInterrupt:
        _error("interrupted: every file is either unchanged or completely fixed")
        sys.exit(EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fix_paths_and_report(paths, select, extend_select, ignore, target_dtypes, config, output_format,
                          exit_zero, stdin_filename, jobs, unsafe, diff, overrides=None) -> None:
    from collections import Counter

    from .files import ReadError, decode
    from .fix import fix_text, unified_diff, wanted
    from .report import FORMATS
    from .report.text import render_lines
    from .runner import check_text, decode_notebook, default_jobs, fix_notebook_text, fix_paths, is_notebook

    path_list = list(paths) or ["."]
    selection = _load_selection(config, _first_path(path_list, stdin_filename), select,
                                extend_select, ignore, target_dtypes, **(overrides or {}))
    errors: List[str] = []
    warnings: List[str] = []
    remaining = []
    applied: Counter = Counter()
    changed_files = 0
    diffs: List[str] = []
    stdin_output: Optional[str] = None

    if "-" in path_list:
        name = stdin_filename or "-"
        try:
            data = sys.stdin.buffer.read()
            if is_notebook(Path(name)):
                original = decode_notebook(data)
                outcome, cell_diff = fix_notebook_text(original, name, Path(name), selection, unsafe)
            else:
                original = decode(data).text
                outcome = fix_text(original, lambda t: check_text(t, name, Path(name), selection), unsafe)
                cell_diff = unified_diff(name, original, outcome.text)
            applied.update(outcome.applied)
            remaining.extend(outcome.remaining)
            warnings.extend(outcome.dropped)
            errors.extend(outcome.errors)
            if diff:
                if cell_diff:
                    diffs.append(cell_diff)
            else:
                stdin_output = outcome.text
            changed_files += outcome.text != original
        except ReadError as exc:
            errors.append(f"{name}: {exc}")
    file_paths = [Path(p) for p in path_list if p != "-"]
    if file_paths:
        results, problems = fix_paths(file_paths, selection, unsafe, write=not diff,
                                      jobs=jobs or default_jobs())
        errors.extend(problems)
        for result in results:
            errors.extend(result.errors)
            warnings.extend(result.warnings)
            if result.outcome is None:
                continue
            warnings.extend(result.outcome.dropped)
            remaining.extend(result.outcome.remaining)
            if result.changed:
                if diff:
                    diffs.append(result.diff)
                    applied.update(result.outcome.applied)
                    changed_files += 1
                elif not any(e.startswith(f"{result.path}:") for e in result.errors):
                    applied.update(result.outcome.applied)
                    changed_files += 1
    remaining.sort(key=lambda f: f.sort_key())

    for message in errors:
        _error(message)
    for message in warnings:
        click.echo(f"warning: {message}", err=True)
    total = sum(applied.values())
    by_code = ", ".join(f"{n} {code}" for code, n in sorted(applied.items()))
    verb = "Would fix" if diff else "Fixed"
    fixed_line = (f"{verb} {total} finding{'s' if total != 1 else ''} in {changed_files} "
                  f"file{'s' if changed_files != 1 else ''}" + (f" ({by_code})." if total else "."))
    hidden = sum(1 for f in remaining if f.fix is not None and not wanted(f, unsafe))
    hint = (f"{hidden} more fix{'es' if hidden != 1 else ''} available with `--unsafe-fixes`."
            if hidden else "")

    if diff:
        click.echo("".join(diffs), nl=False)
        click.echo(fixed_line, err=True)
        if hint:
            click.echo(hint, err=True)
        sys.exit(EXIT_ERROR if errors else (EXIT_FINDINGS if diffs else EXIT_CLEAN))
    if stdin_output is not None:
        click.echo(stdin_output, nl=False)
        out_err = True
    else:
        out_err = False
    if output_format == "text":
        click.echo(render_lines(remaining), nl=False, err=out_err)
        left = f" {len(remaining)} remaining." if remaining else ""
        click.echo(fixed_line + left + (" " + hint if hint else ""), err=out_err)
    else:
        click.echo(FORMATS[output_format](remaining), nl=False, err=out_err)
    if errors:
        sys.exit(EXIT_ERROR)
    if remaining and not exit_zero:
        sys.exit(EXIT_FINDINGS)
    sys.exit(EXIT_CLEAN)


@main.command(short_help="Run a model in low precision: which findings fire?", epilog="""\b
Exit codes:
  0  nothing fired: no finding confirmed, no unflagged event
  1  a finding was confirmed or a non-finite value appeared where no rule looked
  2  error: the target cannot be imported, its factory raised or returned the
     wrong type, the device is unavailable or out of memory, an op is not
     implemented for the dtype, the run exceeded --timeout, the target exited
     (sys.exit, os._exit) or raised KeyboardInterrupt before the run finished
  130  interrupted (Ctrl-C, SIGTERM): the target's process is killed

With --replay DIR: 1 the bundle's step went non-finite again (its origin is
shown), 0 it stayed finite, 2 the bundle cannot be read or replayed.
""")
@click.argument("target", required=False)
@click.option("--replay", "replay_dir", metavar="DIR", default=None,
              help="Replay the step in a repro bundle that nanlint.Guard wrote (instead of TARGET).")
@selection_options
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="auto: cuda, then mps, then cpu.")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), default="float16", show_default=True,
              help="The dtype the model runs in. (--target-dtype only chooses which static findings are joined.)")
@click.option("--precision", type=click.Choice(["half", "autocast"]), default="half", show_default=True,
              help="half: cast the model to --dtype; autocast: float32 weights under torch.autocast.")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Training steps when the target gives an optimizer or train_step (default 5).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds torch before the factory and the run: the same seed gives the same report.")
@click.option("--push-steps", type=click.IntRange(min=0), default=20, show_default=True,
              help="Signed-gradient steps on the inputs per reached finding (0 turns the push off).")
@click.option("--regimes", metavar="LIST",
              help="Comma-separated regimes to run (example,eval,zeros,near-zero,scaled-x10,scaled-x100,scaled-x1000,"
                   "identical-pair,masked-row,masked-row-inverse,train,grad-push), or to skip when each is prefixed with -.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one object per report entry on stdout (the target's own prints go to stderr).")
@click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True, metavar="SECONDS",
              callback=lambda ctx, param, value: _not_nan(value, param),
              help="Stop a target that runs longer than this (import, factory and run; 0 or inf: no limit); exit 2.")
@click.option("--verbose", is_flag=True, help="Show the traceback behind an error.")
def confirm(target, replay_dir, select, extend_select, ignore, target_dtypes, config, device, dtype, precision,
            steps, seed, push_steps, regimes, output_format, timeout, verbose, min_confidence) -> None:
    """Run TARGET in low precision and show which static findings actually fire.

    TARGET is path/to/file.py:factory or package.module:factory; factory()
    returns nanlint.Target(model=..., inputs=..., loss_fn=..., optimizer=...,
    train_step=...) or a (model, inputs) tuple.
    """
    if (target is None) == (replay_dir is None):
        _error("give either TARGET or --replay DIR")
        sys.exit(EXIT_ERROR)
    if replay_dir is not None:
        from .confirm_cli import run_replay

        sys.exit(run_replay(replay_dir, output_format=output_format, verbose=verbose))
    from .confirm_cli import run_confirm

    try:
        where = target.rpartition(":")[0]
        first = Path(where) if where.endswith(".py") else None
        # every static finding is joined, whatever its confidence, unless asked otherwise:
        # a low-confidence finding that fires is worth seeing
        selection = _load_selection(config, first, select, extend_select, ignore, target_dtypes,
                                    min_confidence=min_confidence or "low")
        code = run_confirm(target, selection, device=device, dtype=dtype, precision=precision, steps=steps,
                           seed=seed, push_steps=push_steps, regimes=regimes, output_format=output_format,
                           verbose=verbose, timeout=timeout)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _not_nan(value: float, param: click.Parameter) -> float:
    if value != value:
        raise click.BadParameter("must be a number of seconds, not nan", param=param)
    return value


@main.command(short_help="Show a rule's documentation, or list every rule.")
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every rule: code, name, default on/off, fix.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: code, name, summary, default, fix and documentation of each rule shown.")
def rule(code: Optional[str], show_all: bool, output_format: str) -> None:
    """Show the documentation of rule CODE (e.g. NL002), or list all rules."""
    import json

    from .registry import documented_rules, rules_by_code

    def as_dict(r) -> dict:
        return {"code": r.code, "name": r.name, "summary": r.summary, "default": bool(r.default_enabled),
                "fix": r.fix_applicability, "documentation": r.documentation()}

    if output_format == "json":
        if show_all or code is None:
            chosen = list(documented_rules())
        else:
            found = rules_by_code().get(code.upper())
            if found is None:
                _error(f"unknown rule `{code}` (see `nanlint rule --all`)")
                sys.exit(EXIT_ERROR)
            chosen = [found]
        click.echo(json.dumps([as_dict(r) for r in chosen], indent=2, ensure_ascii=False))
        return
    if show_all or code is None:
        rows = [("code", "name", "default", "fix", "summary")]
        for r in documented_rules():
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
