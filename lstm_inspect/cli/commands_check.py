"""`check`, `snapshot` and `diff`: lstm-inspect as a CI gate for model files."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import click

from . import MODEL, bound_parent, cli, isolated, isolation_settings, layer_option, shown_path
from ..errors import ExitCode, InspectError
from ..text_safety import dumps, visible

FORMATS = ("human", "json", "junit", "github", "sarif")
#: What `check -o` may be called in each format.
OUTPUT_EXTENSIONS = {"human": (".txt", ".log"), "json": (".json",), "junit": (".xml",), "github": (".txt", ".log"),
                     "sarif": (".sarif", ".json")}


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _pairs(values: tuple[str, ...] | list[str], what: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    out = {}
    for item in _split(tuple(values)):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip() or not raw.strip():
            raise InspectError(f"{what} must look like NAME=VALUE, not {item!r}")
        try:
            out[name.strip()] = convert(raw.strip())
        except ValueError:
            raise InspectError(f"{what}: bad value in {item!r}") from None
    return out


def _threshold_value(raw: str) -> float | None:
    return None if raw.lower() in ("none", "off") else float(raw)


def _rules_help() -> str:
    from ..analysis.check import RULES

    return ", ".join(RULES)


@cli.command("check")
@click.argument("paths", nargs=-1, required=False, type=MODEL)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: human).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the report to this file instead of stdout.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Read settings from this TOML file instead of the nearest pyproject.toml.")
@click.option("--strict/--no-strict", default=None, help="Warnings fail too.")
@click.option("--select", multiple=True, metavar="RULE[,RULE]", help="Run only these rules (repeatable).")
@click.option("--ignore", multiple=True, metavar="RULE[,RULE]", help="Skip these rules (repeatable).")
@click.option("--severity", "severities", multiple=True, metavar="RULE=error|warning",
              help="Change a rule's severity, e.g. unsafe-code=warning (repeatable).")
@click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE",
              help="Change a threshold, e.g. spectral_norm_max=5; 'off' disables it (repeatable).")
@click.option("--expect-layers", multiple=True, metavar="NAME[,NAME]",
              help="Layers (by name, path or class) that must exist.")
@click.option("--expect-units", multiple=True, metavar="NAME=N", help="A layer's expected units, e.g. lstm=120.")
@click.option("--min-params", type=int, default=None, help="Fail below this many parameters.")
@click.option("--max-params", type=int, default=None, help="Fail above this many parameters.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="A snapshot (`lstm-inspect snapshot`) the model must still match.")
@click.option("-j", "--jobs", type=int, default=None, help="Check files in N worker processes (0: one per CPU).")
@layer_option
@click.option("--no-progress", is_flag=True, help="No progress bar, even on a terminal.")
@click.option("--list-rules", is_flag=True, help="List the rules with their severities and thresholds, and exit.")
def check_command(paths: tuple[str, ...], fmt: str | None, output: str | None, config_file: str | None,
                  strict: bool | None, select: tuple[str, ...], ignore: tuple[str, ...],
                  severities: tuple[str, ...], thresholds: tuple[str, ...], expect_layers: tuple[str, ...],
                  expect_units: tuple[str, ...], min_params: int | None, max_params: int | None,
                  baseline: str | None, jobs: int | None, layers: tuple[str, ...], no_progress: bool,
                  list_rules: bool) -> None:
    """Check model files (files, directories, globs) against rules; exit 0 pass, 1 a rule failed, 2 unreadable.

    Rules: see --list-rules and docs/check.md. Settings come from [tool.lstm-inspect] in the nearest
    pyproject.toml (or --config FILE); flags override them.
    """
    from ..analysis import check, discovery, settings, snapshot

    if list_rules:
        _list_rules()
        return
    if not paths:
        raise click.UsageError("give at least one PATH (a model file, a directory or a glob)")
    conf, conf_file, notes = settings.load(config_file)
    options = check.CheckOptions(
        thresholds={**check.DEFAULT_THRESHOLDS, **conf.get("thresholds", {}),
                    **_pairs(thresholds, "--threshold", _threshold_value)},
        select=tuple(_split(select) or conf.get("select", ())),
        ignore=tuple(_split(ignore) or conf.get("ignore", ())),
        severity={**conf.get("severity", {}), **_pairs(severities, "--severity", str)},
        strict=strict if strict is not None else bool(conf.get("strict", False)),
        layers=tuple(layers or conf.get("layer", ())),
        expect_layers=tuple(_split(expect_layers) or conf.get("expect_layers", ())),
        expect_units={**conf.get("expect_units", {}), **_pairs(expect_units, "--expect-units", int)},
        min_params=min_params if min_params is not None else conf.get("min_params"),
        max_params=max_params if max_params is not None else conf.get("max_params"),
    )
    options.thresholds = {k.replace("-", "_"): v for k, v in options.thresholds.items()}
    options.validate()
    baseline = baseline or conf.get("baseline")
    if baseline:
        options.baseline = snapshot.load(baseline)
    fmt = fmt or conf.get("format", "human")
    if fmt not in FORMATS:
        raise InspectError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", conf_file)
    if output:
        from ..output_paths import checked_output

        checked_output(output, OUTPUT_EXTENSIONS[fmt], f"a --format {fmt} report")  # refused before any file is checked
    jobs = jobs if jobs is not None else conf.get("jobs", 1)
    if jobs < 0:
        raise InspectError("--jobs must be 0 (one per CPU) or more")
    jobs = jobs or os.cpu_count() or 1

    missing = [p for p in paths if not os.path.lexists(p) and not any(c in p for c in "*?[")
               and not os.path.isfile(p + ".index")]  # a TensorFlow checkpoint is named by its prefix
    if missing:  # a mistyped path is the command line's error, not a report about a file
        raise InspectError("no such file or directory", missing[0])
    files, path_notes = discovery.discover(paths)
    options.code_only = discovery.walked_npz(paths, files)  # a walked-into .npz may be data: code scan only
    notes += path_notes
    if not files:
        raise InspectError("no model files found in " + ", ".join(paths))

    from ..render.text import make_console

    err_console = make_console(stderr=True)
    # Only for a person watching: a terminal on stderr, the human format, and not a CI job (whose runner may give
    # it a pseudo-terminal, and whose log would keep every redraw).
    show_bar = (fmt == "human" and not no_progress and err_console.is_terminal and len(files) > 1
                and not os.environ.get("CI"))
    from ..render.check import progress

    with progress(len(files), err_console, show_bar) as advance:
        results = run_checks(files, options, jobs, advance)
    bound_parent(isolation_settings())  # rendering the verdicts is bounded like reading the files

    rule_ids = [r for r in check.RULES if options.enabled(r)]
    if fmt == "human":
        from ..render.check import render_check

        if output:
            with _open_output(output) as handle:
                render_check(results, make_console(file=handle), options.strict, notes)
        else:
            render_check(results, make_console(), options.strict, notes)
    else:
        from ..render.formats import FORMATTERS

        for note in notes:
            click.echo(f"lstm-inspect: note: {visible(note)}", err=True)
        text = FORMATTERS[fmt](results, rule_ids, options.strict)
        if output:
            with _open_output(output) as handle:
                handle.write(text)
        else:
            click.echo(text, nl=False)
    for result in results:  # the report has them too; stderr gets every error, one line each
        if result.error:
            click.echo(f"lstm-inspect: error: {visible(result.path)}: {visible(result.error)}", err=True)
    sys.stdout.flush()
    code = check.exit_code(results)
    if any(r.error and r.error.startswith(_BUG) for r in results):
        code = int(ExitCode.INTERNAL)
    click.get_current_context().exit(code)


#: How a file that hit a bug in lstm-inspect is reported: that file only, the others keep their verdicts, and the
#: run ends with exit code 3.
_BUG = "internal error (a bug in lstm-inspect, please report it): "


def _open_output(path: str) -> Any:
    try:
        return open(path, "w")
    except OSError as exc:
        raise InspectError(f"cannot write: {exc.strerror or exc}", path) from exc


def run_checks(files: list[str], options: Any, jobs: int, advance: Callable[[str], None]) -> list[Any]:
    """Check `files`, up to `jobs` at a time, each in its own isolated child process (see `isolated`): a file that
    crashes the HDF5 library, hangs or exhausts memory gets an error verdict and the others still get theirs.
    Results come back in the order of `files`."""
    from concurrent.futures import ThreadPoolExecutor

    from ..analysis import check

    settings = isolation_settings()
    if not settings["in_process"] and len(files) > 1:
        from .. import isolation

        isolation.preload_every_reader()  # once here, not in every child

    def check_one(path: str) -> Any:
        try:
            data = isolated(_check_path_data, path, options, label=path, settings=settings)
            result = check.FileResult.from_dict(data, strict=options.strict)
        except InspectError as exc:  # crashed, timed out or ran out of memory
            result = check.FileResult(path=path, error=exc.message, strict=options.strict)
        except Exception as exc:  # a bug met on this file: reported for it, and every other file still checked
            if settings["in_process"]:
                raise
            result = check.FileResult(path=path, error=_BUG + str(exc), strict=options.strict)
        result.path = shown_path(result.path)
        advance(path)
        return result

    if jobs <= 1 or len(files) <= 1:
        return [check_one(path) for path in files]
    from .. import cpus

    cap, cpus.thread_cap = cpus.thread_cap, max(1, cpus.usable_cpus() // jobs)  # the children share the CPUs
    try:
        # Threads only wait on the children; the work happens in the forked processes (which inherit the cap).
        with ThreadPoolExecutor(max_workers=min(jobs, len(files))) as pool:
            return list(pool.map(check_one, files))
    finally:
        cpus.thread_cap = cap


def _check_path_data(path: str, options: Any) -> dict[str, Any]:
    from ..analysis.check import check_path

    return check_path(path, options).as_dict()


def _list_rules() -> None:
    from ..analysis.check import DEFAULT_THRESHOLDS, RULES

    for rule in RULES.values():
        limits = ", ".join(f"{name}={DEFAULT_THRESHOLDS[name]}" for name in rule.thresholds)
        click.echo(f"{rule.id:22} {rule.severity:8} {rule.summary}" + (f" [{limits}]" if limits else ""))


@cli.command("snapshot")
@click.argument("model", type=MODEL)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The snapshot file to write (default: print it).")
@layer_option
def snapshot_command(model: str, output: str | None, layers: tuple[str, ...]) -> None:
    """Record MODEL's structure and per-block statistics, for `check --baseline`."""
    from ..analysis import snapshot
    from ..readers import open_model

    def record_of() -> dict[str, Any]:
        with open_model(model) as opened:
            return snapshot.snapshot(opened, layers)

    if output:
        from ..output_paths import JSON, checked_output

        checked_output(output, JSON)
    record = isolated(record_of, label=model)
    if output:
        snapshot.write(record, output)
        click.echo(f"wrote a snapshot of {len(record['layers'])} layers to {visible(output)}", err=True)
    else:
        click.echo(dumps(record))


@cli.command("diff")
@click.argument("a", type=MODEL)
@click.argument("b", type=MODEL)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="A block is unchanged when max |Δ| is at most this.")
@click.option("--all", "show_all", is_flag=True, help="List unchanged blocks too.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML page: per-gate heatmaps of B - A, relative change per block.")
@layer_option
def diff_command(a: str, b: str, as_json: bool, atol: float, show_all: bool, html_path: str | None,
                 layers: tuple[str, ...]) -> None:
    """Compare the weights of two model files: exit 0 identical, 1 different, 2 unreadable."""
    from ..analysis.diff import diff_models
    from ..readers import open_model

    if not atol >= 0:
        raise InspectError("--atol must be 0 or more")
    if html_path:
        from ..output_paths import HTML, checked_output

        checked_output(html_path, HTML, "--html")

    def compare() -> dict[str, Any]:
        if html_path:
            from ..render.pictures import diff_html

            return diff_html(a, b, html_path, atol=atol, layers=layers)
        with open_model(a) as model_a, open_model(b) as model_b:
            return diff_models(model_a, model_b, atol=atol, layers=layers)

    report = isolated(compare, label=f"{a} / {b}")
    for side in ("a", "b"):
        report[side]["file"] = shown_path(report[side]["file"])
    if as_json:
        click.echo(dumps(report))
    else:
        from ..render.check import render_diff
        from ..render.text import make_console

        render_diff(report, make_console(), show_unchanged=show_all)
    click.get_current_context().exit(int(ExitCode.OK if report["identical"] else ExitCode.FINDINGS))
