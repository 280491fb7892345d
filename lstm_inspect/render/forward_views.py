"""Human-readable output of `verify` and `explain` with rich."""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Callable, Iterator

from rich.console import Console, Group
from rich.cells import cell_len
from rich.panel import Panel
from rich.text import Text

from ..text_safety import visible
from .tables import Column, fitted_tables

if TYPE_CHECKING:
    from ..run.explanation import Explanation
    from ..run.verify_keras import VerifyResult


def _sci(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.2e}"


@contextlib.contextmanager
def verify_progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner on the terminal naming what `verify` runs now (on a copy of stderr, which stays usable while the
    reference framework's own stderr is silenced); yields the callback, a no-op when not `enabled`."""
    if not enabled:
        yield lambda message: None
        return
    from .text import make_console

    with os.fdopen(os.dup(2), "w") as terminal:
        console = make_console(file=terminal)
        with console.status("verify: starting") as status:
            yield lambda message: status.update(Text(f"verify: {message}"))


def render_verify(result: "VerifyResult", console: Console) -> None:
    head = Text()
    head.append(visible(result.path), style="bold")
    written = f" (file written by Keras {result.file_keras_version or '?'})" if result.reference in (
        "keras", "tf_keras") else ""
    head.append(f"\nnumpy forward pass vs {result.reference} {result.reference_version}{written}")
    inputs = ", ".join(f"{name} {tuple(shape)}" for name, shape in result.input_shapes.items())
    head.append(f"\ninputs: {inputs} · tolerance {result.tolerance}")
    for note in result.notes:
        head.append(f"\n{visible(note)}")
    console.print(head)
    columns = [Column("layer"), Column("shape"), Column("max abs diff", justify="right"),
               Column("max rel diff", justify="right"), Column("status", wrap=True)]
    rows = []
    for d in result.diffs:
        status = Text("ok", style="green") if d.ok else Text("MISMATCH" + (f" ({d.note})" if d.note else ""),
                                                            style="bold red")
        rows.append([visible(d.key), str(d.shape), _sci(d.max_abs), _sci(d.max_rel), status])
    for table in fitted_tables(columns, rows, console.width):
        console.print(table)
    worst = result.worst
    if result.ok:
        console.print(Text(f"OK: {len(result.diffs)} outputs match {result.reference} (largest difference "
                           f"{_sci(worst.max_abs) if worst else '0'})", style="green"))
    else:
        bad = [visible(d.key) for d in result.diffs if not d.ok]
        console.print(Text(f"MISMATCH in {len(bad)} of {len(result.diffs)} outputs: {', '.join(bad)}",
                           style="bold red"))


def render_explain(result: "Explanation", console: Console) -> None:
    head = Text(visible(result.path), style="bold")
    if result.keras_version:
        head.append(f" · Keras {result.keras_version}", style="")
    console.print(head)
    for warning in result.warnings:
        console.print(Text("warning: ", style="bold yellow") + Text(visible(warning)))
    for layer in result.layers:
        parts: list = []
        if layer.equations:
            parts.append(Text("\n".join(visible(line) for line in layer.equations)))
        if layer.shapes:
            parts.append(Text(""))
            parts.extend(fitted_tables([Column("term", style="cyan"), Column("shape", wrap=True)],
                                       [[visible(term), visible(shape)] for term, shape in layer.shapes],
                                       console.width - 4, box=None))
        if layer.pitfalls:
            notes = Text()
            for p in layer.pitfalls:
                notes.append("\n• ", style="yellow")
                notes.append(visible(p))
            parts.append(notes)
        title = Text(visible(f"{layer.key} · {layer.summary}"))
        if cell_len(title.plain) + 6 <= console.width:
            console.print(Panel(Group(*parts) if parts else Text("-"), title=title, title_align="left"))
        else:  # rich would cut a title wider than the panel: it goes inside instead, where it wraps
            title.stylize("bold")
            console.print(Panel(Group(title, *parts)))
