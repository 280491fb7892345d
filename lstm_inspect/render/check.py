"""Human-readable output of `check` and `diff` with rich, and the progress bar of a long `check`."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ..analysis.check import ERROR, FileResult, summary
from ..text_safety import sanitize, visible
from .tables import Column, fitted_tables

_STATUS = {"pass": ("PASS", "bold green"), "fail": ("FAIL", "bold red"), "error": ("ERROR", "bold red")}


def render_check(results: list[FileResult], console: Console, strict: bool, notes: list[str] = ()) -> None:
    for note in notes:
        console.print(Text("note: ", style="cyan") + Text(visible(note)))
    for result in results:
        label, style = _STATUS[result.status]
        head = Text(f"{label:5} ", style=style) + Text(visible(result.path), style="bold")
        if result.kind:
            head.append(f"  ({result.kind})", style="dim")
        console.print(head)
        if result.error:
            console.print(Text("      cannot read: ", style="red") + Text(visible(result.error)))
            continue
        if not result.findings:
            continue
        columns = [Column(" " * 5), Column("severity"), Column("rule"), Column("where"), Column("message", wrap=True)]
        rows = []
        for f in result.findings:
            failing = f.severity == ERROR or strict
            rows.append(["", Text(f.severity, style="red" if failing else "yellow"), f.rule,
                         visible("/".join(p for p in (f.layer, f.block) if p) or "(model)"), visible(f.message)])
        for table in fitted_tables(columns, rows, console.width, keys=3, show_header=False, box=None):
            console.print(table)
    counts = summary(results)
    line = (f"{counts['files']} file{'s' if counts['files'] != 1 else ''}: {counts['passed']} passed, "
            f"{counts['failed']} failed, {counts['unreadable']} unreadable · {counts['errors']} error"
            f"{'s' if counts['errors'] != 1 else ''}, {counts['warnings']} warning"
            f"{'s' if counts['warnings'] != 1 else ''}")
    if counts["warnings"] and not strict:
        line += " (warnings fail only with --strict)"
    console.print(Text(line, style="bold"))


@contextlib.contextmanager
def progress(total: int, console: Console, enabled: bool) -> Iterator[Any]:
    """A progress bar on `console` while files are checked, or a no-op; yields ``advance(path)``."""
    if not enabled:
        yield lambda path: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("", total=total)
        yield lambda path: bar.update(task, advance=1, description=escape(visible(path)[-50:]))


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def render_diff(report: dict[str, Any], console: Console, show_unchanged: bool = False) -> None:
    report = sanitize(report)  # names came from the files: shown, never acted on
    a, b = report["a"], report["b"]
    console.print(Text("A ", style="bold") + Text(f"{a['file']}  ({a['kind']}, {a['total_params']:,} params)"))
    console.print(Text("B ", style="bold") + Text(f"{b['file']}  ({b['kind']}, {b['total_params']:,} params)"))
    for entry in report["removed"]:
        console.print(Text("- removed ", style="red") + Text(f"{entry['layer']} {entry['class_name']}: "
                                                             f"{entry['weights']}"))
    for entry in report["added"]:
        console.print(Text("+ added   ", style="green") + Text(f"{entry['layer']} {entry['class_name']}: "
                                                               f"{entry['weights']}"))
    for entry in report["renamed"]:
        console.print(Text("~ renamed ", style="yellow") + Text(f"{entry['a']} -> {entry['b']}"))
    for entry in report["shape_changes"]:
        console.print(Text("~ shapes  ", style="yellow") + Text(f"{entry['layer']}: {entry['a']} -> {entry['b']}"))
    columns = [Column(name, justify="right" if name in ("max |Δ|", "rel. Frobenius", "cosine") else "left")
               for name in ("layer", "block", "status", "max |Δ|", "rel. Frobenius", "cosine")]
    rows = []
    for entry in report["layers"]:
        layer = entry["b"] if entry["a"] == entry["b"] else f"{entry['a']} -> {entry['b']}"
        for block in entry["blocks"]:
            if block["status"] == "unchanged" and not show_unchanged:
                continue
            style = {"unchanged": "dim", "changed": "yellow"}.get(block["status"], "red")
            rows.append([layer, block["key"], Text(block["status"], style=style), _num(block.get("max_abs_diff")),
                         _num(block.get("rel_frobenius")), _num(block.get("cosine"))])
    if rows:
        for table in fitted_tables(columns, rows, console.width, keys=2, title="Blocks", title_justify="left"):
            console.print(table)
    s = report["summary"]
    verdict = Text("identical" if report["identical"] else "different",
                   style="bold green" if report["identical"] else "bold yellow")
    console.print(verdict + Text(f" · {s['layers_compared']} layers and {s['blocks_compared']} blocks compared, "
                                 f"{s['blocks_changed']} changed (atol {report['atol']:g}), {s['layers_added']} added, "
                                 f"{s['layers_removed']} removed, {s['layers_renamed']} renamed, "
                                 f"{s['shape_changes']} shape changes"))
