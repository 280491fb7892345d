"""Human-readable output of `inspect` with rich."""
from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Output piped into `head` and closed early is not an error: rich silences stdout, we exit 0.
        try:
            super().on_broken_pipe()
        except SystemExit:
            pass
        raise SystemExit(0)


def make_console(file: Any = None, stderr: bool = False) -> Console:
    console = _Console(file=file, stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # piped or captured: wide enough for the block tables, no colour codes
        console = _Console(file=file, stderr=stderr, highlight=False, width=140, color_system=None)
    return console


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _shape(shape: list[int]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def render_inspect(report: dict[str, Any], console: Console) -> None:
    console.print(_header(report))
    for warning in report["warnings"]:
        console.print(Text("warning: ", style="bold yellow") + Text(warning))
    console.print(_layer_table(report))
    for layer in report["layers"]:
        if layer["recurrent"]:
            console.print(_recurrent_panel(layer))


def _header(report: dict[str, Any]) -> Text:
    text = Text()
    text.append(report["file"], style="bold")
    text.append(f"\n{report['kind_description']}")
    if report["keras_version"]:
        text.append(f" · Keras {report['keras_version']}")
    if report["backend"]:
        text.append(f" · backend {report['backend']}")
    text.append(f"\nTotal params: {report['total_params']:,}")
    return text


_SHOW = object()
#: Config values the layer table leaves out because they are Keras's defaults (the JSON keeps everything).
_DEFAULTS = {"use_bias": True, "unit_forget_bias": True, "go_backwards": False, "return_sequences": False,
             "return_state": False, "stateful": False, "dropout": 0.0, "recurrent_dropout": 0.0, "trainable": True}


def _layer_table(report: dict[str, Any]) -> Table:
    table = Table(title="Layers", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("layer")
    table.add_column("class")
    table.add_column("params", justify="right")
    table.add_column("weights")
    table.add_column("config")
    for layer in report["layers"]:
        name = "  " * layer["depth"] + layer["name"]
        cls = layer["class_name"] + (" (inferred)" if layer["inferred_class"] else "")
        weights = ", ".join(f"{w['name']} {_shape(w['shape'])}" for w in layer["weights"])
        config = ", ".join(f"{k}={v}" for k, v in layer["config"].items() if _DEFAULTS.get(k, _SHOW) != v)
        if layer["needs_code"]:
            config = (config + "; " if config else "") + f"[yellow]needs code: {escape(layer['needs_code'])}[/]"
        table.add_row(escape(name), escape(cls), f"{layer['params']:,}", escape(weights), config if layer["needs_code"] else escape(config))
    return table


def _recurrent_panel(layer: dict[str, Any]) -> Panel:
    rec = layer["recurrent"]
    table = Table(show_edge=False, pad_edge=False)
    for column in ("block", "from", "shape", "params"):
        table.add_column(column, justify="right" if column == "params" else "left")
    has_stats = any(b["stats"] for b in rec["blocks"])
    if has_stats:
        for column in ("mean", "std", "min", "max", "L2", "zeros", "NaN", "Inf"):
            table.add_column(column, justify="right")
    for block in rec["blocks"]:
        row = [block["key"], block["source"], _shape(block["shape"]), f"{_size(block['shape']):,}"]
        s = block["stats"]
        if s:
            row += [_num(s["mean"]), _num(s["std"]), _num(s["min"]), _num(s["max"]), _num(s["l2"]),
                    f"{s['zero_fraction']:.0%}", _flag(s["nan"]), _flag(s["inf"])]
        table.add_row(*(escape(str(cell)) for cell in row))
    notes = Text()
    for note in rec["notes"]:
        notes.append("• ", style="cyan")
        notes.append(note + "\n")
    title = (f"{layer['path']} · {layer['class_name']} · {rec['units']} units · input {rec['input_dim']}"
             + (f" · reset_after={rec['reset_after']}" if rec["reset_after"] is not None else ""))
    return Panel(Group(table, notes), title=escape(title), title_align="left")


def _flag(count: int) -> str:
    return str(count) if count else "0"


def _size(shape: list[int]) -> int:
    size = 1
    for n in shape:
        size *= n
    return size
