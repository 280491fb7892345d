"""Tables that fit the console without cutting a value.

rich shrinks a table that is too wide by cutting cells with "…", which turned a mean of ``2.944e-04`` into
``2.9…``. Here the widths are chosen before rich sees the table: numbers and names keep their full width; text
columns (weights, config, messages) wrap between words; and when even that does not fit, the columns are split
over several tables that each repeat the key column(s). A word longer than its column is folded onto the next
line (never cut) as the last resort.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

#: Cell padding (one space each side) and the separator between two columns, with show_edge / pad_edge off.
_GAP = 3
#: A wrapping column is never made narrower than this (nor than its longest word, when that fits).
_MIN_WRAP = 12


@dataclass
class Column:
    header: str
    justify: str = "left"
    wrap: bool = False  # may wrap; otherwise the column keeps its widest cell's width
    style: str | None = None


#: Between the items of a list cell (a cell given as a list: weights, config entries): lines break only here.
_SEPARATOR = ", "


def _units(cell: Any) -> list[Text]:
    """The pieces a cell may be broken between: a list cell's items, or a text's words."""
    if isinstance(cell, list):
        return cell
    return [Text(word) for line in cell.plain.split("\n") for word in line.split()]


def _natural(column: Column, cells: list[Any]) -> int:
    widths = [cell_len(column.header)]
    for cell in cells:
        if isinstance(cell, list):
            widths.append(sum(cell_len(item.plain) for item in cell) + len(_SEPARATOR) * max(0, len(cell) - 1))
        else:
            widths.extend(cell_len(line) for line in cell.plain.split("\n"))
    return max(widths)


def _longest_word(column: Column, cells: list[Any]) -> int:
    units = [cell_len(w) for w in column.header.split()] + [cell_len(u.plain) for c in cells for u in _units(c)]
    return max(units, default=1)


def _packed(items: list[Text], width: int) -> Text:
    """List items joined by ", ", a line break before an item that would pass `width`."""
    out, line = Text(), 0
    for n, item in enumerate(items):
        size = cell_len(item.plain)
        if n:
            if line + len(_SEPARATOR) + size > width:
                out.append(",\n")
                line = 0
            else:
                out.append(_SEPARATOR)
                line += len(_SEPARATOR)
        out.append_text(item)
        line += size
    return out


def _span(widths: Sequence[int]) -> int:
    return sum(widths) + _GAP * (len(widths) - 1)


def _as_text(cell: Any) -> Any:
    if isinstance(cell, (list, tuple)):
        return [_as_text(item) for item in cell]
    return cell if isinstance(cell, Text) else Text(str(cell))


def fitted_tables(columns: list[Column], rows: list[list[Any]], width: int, keys: int = 1,
                  **table_options: Any) -> list[Table]:
    """`rows` (str or Text cells, or lists of them shown joined by ", "; strings are shown as they are, never parsed
    as markup) as one or more tables
    no wider than `width`. The first `keys` columns are repeated in every table when the columns are split."""
    cells = [[_as_text(row[i]) for row in rows] for i in range(len(columns))]
    natural = [_natural(c, cells[i]) for i, c in enumerate(columns)]
    minimum = [min(natural[i], max(_MIN_WRAP, _longest_word(c, cells[i]))) if c.wrap else natural[i]
               for i, c in enumerate(columns)]
    groups: list[list[int]] = []
    current = list(range(keys))
    for index in range(keys, len(columns)):
        if len(current) > keys and _span([minimum[i] for i in current + [index]]) > width:
            groups.append(current)
            current = list(range(keys))
        current.append(index)
    groups.append(current)
    tables = []
    for number, group in enumerate(groups):
        widths = _widths([columns[i] for i in group], [natural[i] for i in group], [minimum[i] for i in group],
                         width)
        options = dict(table_options)
        if number:
            options.pop("title", None)
        table = Table(show_edge=False, pad_edge=False, **options)
        for i, column_width in zip(group, widths):
            column = columns[i]
            table.add_column(column.header, justify=column.justify, style=column.style, width=column_width,  # type: ignore[arg-type]
                             no_wrap=not column.wrap, overflow="fold")
        for r in range(len(rows)):
            table.add_row(*(_packed(cells[i][r], w) if isinstance(cells[i][r], list) else cells[i][r]
                            for i, w in zip(group, widths)))
        tables.append(table)
    return tables


def _widths(columns: list[Column], natural: list[int], minimum: list[int], width: int) -> list[int]:
    """Each column's width: its natural width when the table fits; otherwise the wrapping columns share what the
    others leave, each at least its minimum; a column that cannot get even that is folded."""
    if _span(natural) <= width:
        return natural
    fixed = sum(n for n, c in zip(natural, columns) if not c.wrap)
    room = width - fixed - _GAP * (len(columns) - 1)
    wrapping = [i for i, c in enumerate(columns) if c.wrap]
    widths = list(natural)
    if not wrapping or room <= 0:
        # Only fixed-width cells and still too wide: fold the widest one (last resort; no value is cut).
        widest = max(range(len(columns)), key=lambda i: natural[i])
        widths[widest] = max(1, natural[widest] - (_span(natural) - width))
        return widths
    need = sum(minimum[i] for i in wrapping)
    if room >= need:  # every wrapping column gets its minimum, the rest shared by how much more each wants
        slack = {i: natural[i] - minimum[i] for i in wrapping}
        total = sum(slack.values()) or 1
        for i in wrapping:
            widths[i] = minimum[i] + (room - need) * slack[i] // total
    else:  # narrower than the longest words: share the room, the longest words fold
        for i in wrapping:
            widths[i] = max(1, room * minimum[i] // need)
    return widths
