"""Human-readable output of `inspect` with rich."""
from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console, Group
from rich.cells import cell_len
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..text_safety import sanitize
from .tables import Column, fitted_tables


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Output piped into `head` and closed early is not an error: rich silences stdout, we exit 0.
        try:
            super().on_broken_pipe()
        except SystemExit:
            pass
        raise SystemExit(0)


#: Width of output that goes to no terminal, when $COLUMNS is not set and no terminal is attached (docs/commands.md).
DEFAULT_WIDTH = 100
_color = "auto"


def set_color(mode: str) -> None:
    """``auto`` (colour on a terminal unless $NO_COLOR is set), ``always`` or ``never``: for every console made."""
    global _color
    _color = mode


def output_width(is_terminal: bool) -> int | None:
    """None on a terminal (rich measures it); otherwise $COLUMNS, else the width of the terminal the command runs
    in (its stderr or stdin, so `... | head` fits the screen), else DEFAULT_WIDTH."""
    if is_terminal:
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    for stream in (sys.__stderr__, sys.__stdin__):
        try:
            if stream is not None and stream.isatty():
                return os.get_terminal_size(stream.fileno()).columns
        except (OSError, ValueError):
            continue
    return DEFAULT_WIDTH


def make_console(file: Any = None, stderr: bool = False) -> Console:
    probe = Console(file=file, stderr=stderr)
    width = output_width(probe.is_terminal)
    colour: dict[str, Any] = {}
    if _color == "never" or (_color == "auto" and (not probe.is_terminal or os.environ.get("NO_COLOR"))):
        colour = {"color_system": None, "no_color": True}
    elif _color == "always":
        colour = {"force_terminal": True, "no_color": False}
    return _Console(file=file, stderr=stderr, highlight=False, soft_wrap=False, width=width, **colour)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _shape(shape: list[int]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def render_inspect(report: dict[str, Any], console: Console) -> None:
    report = sanitize(report)  # every string came from the file: shown, never acted on
    console.print(_header(report))
    for warning in report["warnings"][:MAX_SHOWN_WARNINGS]:
        console.print(Text("warning: ", style="bold yellow") + Text(warning))
    if len(report["warnings"]) > MAX_SHOWN_WARNINGS:
        console.print(Text(f"… and {len(report['warnings']) - MAX_SHOWN_WARNINGS:,} more warnings (--json lists all)",
                           style="yellow"))
    # A hostile config can hold 100,000 layers: the terminal shows the first ones, --json / --layer the rest.
    layers = report["layers"]
    report = {**report, "layers": layers[:MAX_SHOWN_LAYERS]}
    for table in _layer_tables(report, console.width):
        console.print(table)
    if len(layers) > MAX_SHOWN_LAYERS:
        console.print(Text(f"… and {len(layers) - MAX_SHOWN_LAYERS:,} more layers (--json lists all; --layer NAME "
                           "shows some)", style="yellow"))
    for layer in report["layers"]:
        if layer["recurrent"]:
            console.print(_recurrent_panel(layer, console.width))


#: How much of a huge model the terminal output shows (the JSON output has everything).
MAX_SHOWN_LAYERS = 1000
MAX_SHOWN_WARNINGS = 100


def _header(report: dict[str, Any]) -> Text:
    text = Text()
    text.append(report["file"], style="bold")
    text.append(f"\n{report['kind_description']}")
    if report["keras_version"]:
        text.append(f" · Keras {report['keras_version']}")
    if report["backend"]:
        text.append(f" · backend {report['backend']}")
    text.append(f"\nTotal params: {report['total_params']:,}")
    text.append("\nInputs: " + _inputs(report.get("inputs")))
    return text


def _inputs(inputs: list[dict[str, Any]] | None) -> str:
    if inputs is None:
        return "none known (the file records no model architecture)"
    return "; ".join(f"{i['name']} " + ("(shape not recorded)" if i["shape"] is None else
                                        "(" + ", ".join(str(n) for n in i["shape"]) + ")") + f" {i['dtype']}"
                     for i in inputs) or "none"


_SHOW = object()
#: Config values the layer table leaves out because they are Keras's defaults (the JSON keeps everything).
_DEFAULTS = {"use_bias": True, "unit_forget_bias": True, "go_backwards": False, "return_sequences": False,
             "return_state": False, "stateful": False, "dropout": 0.0, "recurrent_dropout": 0.0, "trainable": True}


def _layer_tables(report: dict[str, Any], width: int) -> list[Table]:
    columns = [Column("layer"), Column("class"), Column("params", justify="right"), Column("weights", wrap=True),
               Column("config", wrap=True)]
    rows = []
    for layer in report["layers"]:
        name = "  " * layer["depth"] + layer["name"]
        cls = layer["class_name"] + (" (inferred)" if layer["inferred_class"] else "")
        weights = [f"{w['name']} {_shape(w['shape'])}" for w in layer["weights"]]
        config = [Text(f"{k}={v}") for k, v in layer["config"].items() if _DEFAULTS.get(k, _SHOW) != v]
        if layer["needs_code"]:
            config.append(Text(f"needs code: {layer['needs_code']}", style="yellow"))
        rows.append([name, cls, f"{layer['params']:,}", weights, config])
    return fitted_tables(columns, rows, width, title="Layers", title_justify="left")


_BLOCK_COLUMNS = [Column("block"), Column("from"), Column("shape"), Column("params", justify="right")]
_STAT_COLUMNS = [Column(name, justify="right") for name in ("mean", "std", "min", "max", "L2", "zeros", "NaN", "Inf")]


def _recurrent_panel(layer: dict[str, Any], width: int) -> Panel:
    rec = layer["recurrent"]
    has_stats = any(b["stats"] for b in rec["blocks"])
    columns = _BLOCK_COLUMNS + (_STAT_COLUMNS if has_stats else [])
    rows = []
    for block in rec["blocks"]:
        row = [block["key"], block["source"], _shape(block["shape"]), f"{_size(block['shape']):,}"]
        s = block["stats"]
        if s:
            row += [_num(s["mean"]), _num(s["std"]), _num(s["min"]), _num(s["max"]), _num(s["l2"]),
                    f"{s['zero_fraction']:.0%}", _flag(s["nan"]), _flag(s["inf"])]
        elif has_stats:
            row += ["-"] * len(_STAT_COLUMNS)
        rows.append(row)
    notes = Text()
    for note in rec["notes"]:
        notes.append("• ", style="cyan")
        notes.append(note + "\n")
    title = (f"{layer['path']} · {layer['class_name']} · {rec['units']} units · input {rec['input_dim']}"
             + (f" · reset_after={rec['reset_after']}" if rec["reset_after"] is not None else ""))
    tables = fitted_tables(columns, rows, width - _PANEL_FRAME)
    if cell_len(title) + 6 <= width:
        return Panel(Group(*tables, notes), title=Text(title), title_align="left")
    # rich would cut a title wider than the panel: it goes inside instead, where it wraps
    return Panel(Group(Text(title, style="bold"), *tables, notes))


#: Columns a Panel's border and padding take.
_PANEL_FRAME = 4


def _flag(count: int) -> str:
    return str(count) if count else "0"


def _size(shape: list[int]) -> int:
    size = 1
    for n in shape:
        size *= n
    return size
