"""Progress of long runs on the console: resync, clean-up, reconcile, a worker's initial sync
and the demo's queue draining.

On a terminal, ``rich`` draws a live bar with counts, percentage, rate and time (German
labels). Anywhere else (a log file, a pipe, CI) a bar would be a stream of control characters,
so the run either prints a plain line at each tenth of the way (``plain="lines"``: at most
eleven lines, whatever the size) or only its last line (``plain="quiet"``, the demo, whose
output must be the same on every run). Progress goes to standard error, so what a command
prints on standard output (``--json``) stays clean.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Literal, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

Plain = Literal["lines", "quiet"]
STEPS = 10  # plain lines: one per tenth of the way


def number(n: float) -> str:
    """A whole number the German way: 12.345."""
    return f"{int(n):,}".replace(",", ".")


def rate(per_second: float) -> str:
    """A rate the German way, one decimal below 100: 12,3 / 1.234."""
    if per_second >= 100:
        return number(round(per_second))
    return f"{per_second:.1f}".replace(".", ",")


def is_terminal(console: Console) -> bool:
    return console.is_terminal and not console.is_dumb_terminal


class _CountColumn(ProgressColumn):
    """``1.234/5.000 Elemente`` (the total left out while it is unknown)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        total = f"/{number(task.total)}" if task.total is not None else ""
        return Text(f"{number(task.completed)}{total} {unit}".rstrip())


class _PercentColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if not task.total:
            return Text("")
        return Text(f"{int(100 * task.completed / task.total):3d} %")


class _RateColumn(ProgressColumn):
    """Elements per second since the start: of the bar's unit, or of its ``items`` counter
    (a clean-up counts mailboxes on the bar and removed elements in the rate)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        unit = task.fields.get("items_unit") or task.fields.get("unit", "")
        done: float = task.fields.get("items", 0) if task.fields.get("items_unit") else task.completed
        if elapsed <= 0:
            return Text(f"– {unit}/s")
        extra = f"{number(done)} {unit}, " if task.fields.get("items_unit") else ""
        return Text(f"{extra}{rate(done / elapsed)} {unit}/s")


class ProgressBar:
    """One run's progress; ``update`` and ``advance`` may be called from any thread.

    ``total`` None: unknown (rich shows a moving bar; plain lines only at the end). A total
    that turns out too small (more work queued meanwhile) grows with ``done``."""

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "Elemente",
        *,
        items_unit: str = "",
        plain: Plain = "lines",
        console: Console | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.unit = unit
        self.items_unit = items_unit
        self.total = total
        self.done = 0
        self.items = 0
        self._plain = plain
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._step = 0  # the last tenth printed as a plain line
        self._closed = False
        self._console = console or Console(file=stream or sys.stderr, highlight=False, emoji=False)
        self._rich: Progress | None = None
        if is_terminal(self._console):
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                _CountColumn(),
                _PercentColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            )
            self._task = self._rich.add_task(label, total=total, unit=unit, items=0, items_unit=items_unit)
            self._rich.start()

    # ------------------------------------------------------------------ feeding it
    def update(self, done: int, *, total: int | None = None, items: int | None = None) -> None:
        with self._lock:
            if self._closed:
                return
            if total is not None:
                self.total = total
            self.done = max(self.done, done)
            if self.total is not None and self.done > self.total:
                self.total = self.done
            if items is not None:
                self.items = items
            self._show()

    def advance(self, n: int = 1, *, items: int = 0) -> None:
        with self._lock:
            done, total = self.done + n, self.total
            all_items = self.items + items
        self.update(done, total=total, items=all_items)

    def close(self, note: str = "") -> None:
        """Finish the bar (a plain run prints its last line now, with ``note`` appended)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._rich is not None:
                self._show()
                self._rich.stop()
                if note:
                    self._console.print(f"  {note}", markup=False)
                return
            if note or (self._plain == "lines" and (self.done or self.total)):
                self._console.print(self.line() + (f" {note}" if note else ""), soft_wrap=True, markup=False)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ showing it
    def line(self) -> str:
        """The plain line: ``Übertragen: 500/1.000 Elemente (50 %), 83,2 Elemente/s``."""
        total = f"/{number(self.total)}" if self.total is not None else ""
        percent = f" ({int(100 * self.done / self.total)} %)" if self.total else ""
        elapsed = max(self._clock() - self._started, 1e-9)
        if self.items_unit:
            speed = (
                f", {number(self.items)} {self.items_unit}, {rate(self.items / elapsed)} {self.items_unit}/s"
            )
        else:
            speed = f", {rate(self.done / elapsed)} {self.unit}/s"
        return f"{self.label}: {number(self.done)}{total} {self.unit}{percent}{speed}"

    def _show(self) -> None:
        if self._rich is not None:
            self._rich.update(
                self._task, completed=self.done, total=self.total, items=self.items, refresh=False
            )
            return
        if self._plain != "lines" or not self.total:
            return
        step = min(STEPS, self.done * STEPS // self.total)
        if step > self._step and self.done < self.total:  # the last line comes with close()
            self._step = step
            self._console.print(self.line(), soft_wrap=True, markup=False)


class _Drains(Protocol):
    def drain(self, timeout: float = ...) -> bool: ...


class _Counts(Protocol):
    def pending_count(self, mailbox: str | None = None) -> int: ...


def drain(
    worker: _Drains,
    outbox: _Counts,
    *,
    timeout: float,
    mailbox: str | None = None,
    label: str = "Übertragen",
    plain: Plain = "lines",
    console: Console | None = None,
) -> bool:
    """``worker.drain(timeout)`` with a bar over the changes waiting at the start (for one
    ``mailbox`` or all). The bar moves after every finished batch. True if drained."""
    from .. import signals

    def left() -> int:
        return outbox.pending_count(mailbox) if mailbox else outbox.pending_count()

    start = left()
    if not start:
        return worker.drain(timeout=timeout)
    bar = ProgressBar(label, start, "Elemente", plain=plain, console=console)

    def on_batch(sender: object, **extra: object) -> None:
        if mailbox is None or extra.get("mailbox") == mailbox:
            bar.update(max(0, start - left()))

    signals.batch_done.connect(on_batch, weak=False)
    try:
        drained = worker.drain(timeout=timeout)
    finally:
        signals.batch_done.disconnect(on_batch)
        bar.update(max(0, start - left()))
        bar.close()
    return drained
