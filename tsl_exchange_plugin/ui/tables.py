"""Tables on the console: ``rich`` on a terminal, the fixed plain layout everywhere else.

On a terminal the table fits the window: text columns end in "…" when too narrow, columns with
numbers, times or record keys (``Column.cut`` False) never lose a character, and the last column
(an error message, a detail) wraps onto further lines instead of running off the edge. A log or a
pipe gets ``status.format_table``'s lines, the same on every run and every width.
"""

from __future__ import annotations

import sys
from typing import IO

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from .progress import is_terminal
from .status import Column, format_table


def print_table(
    columns: list[Column],
    rows: list[list[object]],
    *,
    notes: dict[int, list[str]] | None = None,
    indent: int = 0,
    console: Console | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Print ``rows`` under ``columns``. ``notes``: lines shown under row i (failed entries of a
    mailbox): indented on their own line in plain text, in the last column on a terminal."""
    console = console or Console(file=stream or sys.stdout, highlight=False, emoji=False)
    notes = notes or {}
    widths = _widths(columns, rows, notes, console.width - indent) if is_terminal(console) else None
    if widths is None:  # not a terminal, or one too narrow for the columns: the plain layout
        lines = format_table(columns, rows)
        console.print(" " * indent + lines[0], soft_wrap=True, markup=False)
        for i, line in enumerate(lines[1:]):
            console.print(" " * indent + line, soft_wrap=True, markup=False)
            for note in notes.get(i, ()):
                console.print(" " * indent + "    " + note, soft_wrap=True, markup=False)
        return
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False, expand=False)
    last = len(columns) - 1
    for i, col in enumerate(columns):
        justify: JustifyMethod = "right" if col.align == ">" else "left"
        if i == last:
            table.add_column(col.title, justify=justify, overflow="fold", width=widths[i])
        else:
            table.add_column(col.title, justify=justify, no_wrap=True, overflow="ellipsis", width=widths[i])
    for i, row in enumerate(rows):
        table.add_row(*(Text(_text(v)) for v in row))  # Text: a "[" in a name is not markup
        for note in notes.get(i, ()):
            table.add_row(*([Text("")] * last), Text(note))
    if indent:
        from rich.padding import Padding

        console.print(Padding(table, (0, 0, 0, indent)))
    else:
        console.print(table)


LAST_MIN = 30  # the last column (an error message) keeps at least this much and wraps
SHRINK_MIN = 6  # a text column shrinks (ending in "…") down to this


def _widths(
    columns: list[Column], rows: list[list[object]], notes: dict[int, list[str]], avail: int
) -> list[int] | None:
    """Column widths that fit ``avail``: columns that must not be cut get their longest value,
    the last column at least ``LAST_MIN`` (it wraps), the text columns share the rest in
    proportion to their usual widths. None: the window is too narrow for that."""
    longest = [max([len(c.title), *(len(_text(r[i])) for r in rows)]) for i, c in enumerate(columns)]
    last = len(columns) - 1
    longest[last] = max([longest[last], *(len(n) for ns in notes.values() for n in ns)])
    avail -= 3 * last  # between two columns: a space each side and the divider
    fixed = sum(longest[i] for i, c in enumerate(columns[:last]) if not c.cut)
    wanted = {i: min(max(c.width, len(c.title)), longest[i]) for i, c in enumerate(columns[:last]) if c.cut}
    room = avail - fixed - min(LAST_MIN, longest[last])
    total = sum(wanted.values())
    if room < sum(min(SHRINK_MIN, w) for w in wanted.values()):
        return None
    widths = []
    for i, col in enumerate(columns[:last]):
        if not col.cut:
            widths.append(longest[i])
        elif total <= room:
            widths.append(wanted[i])
        else:
            widths.append(max(min(SHRINK_MIN, wanted[i]), wanted[i] * max(room, 0) // max(total, 1)))
    widths.append(max(min(LAST_MIN, longest[last]), min(longest[last], avail - sum(widths))))
    return widths


def _text(value: object) -> str:
    return " ".join(str(value if value is not None else "").split())
