"""The reconcile sweep's reads over Graph (``SweepSession`` of ``GraphSession``).

As over EWS: every item of ours is listed page by page with only its key and change key (the
extended property filter; To Do: our list and, for Wiedervorlagen the EWS backend wrote, the
default list), and only the items whose change key moved are read in full, reduced to plain
values by ``owned``. Every request goes through the session's ``$batch`` plumbing, so the
per-mailbox limits and the worker's pauses apply as to any push.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..base import ExchangeError, ItemClass, ItemRef, OwnedRef, OwnedValues
from . import owned, wire

if TYPE_CHECKING:
    from .backend import GraphSession

MAX_PAGE = 1000  # Graph's largest page for Outlook collections


def _start_date(session: GraphSession, data: dict[str, Any]) -> str:
    """The local date an event starts on in the mailbox's zone (all-day: the date it names)."""
    if data.get("isAllDay"):
        return owned.day(data.get("start")) or ""
    moment = owned.instant(data.get("start"))
    if not moment:
        return ""
    zone = zoneinfo.ZoneInfo(session._account.timezone)
    return dt.datetime.fromisoformat(moment).astimezone(zone).date().isoformat()


def iter_ours(
    session: GraphSession, item_class: ItemClass, *, page_size: int = 1000
) -> Iterator[list[OwnedRef]]:
    top = max(1, min(page_size, MAX_PAGE))
    if item_class == "task":
        ours, default = session._todo_lists()
        for list_id in [ours] + ([default] if default and default != ours else []):
            link = f"{session._tasks_of(list_id)}?$expand=linkedResources&$top={top}"
            while link:
                page, link = session._page(link)
                refs = []
                for data in page:
                    # A task the EWS backend wrote has only the record link: in the default list,
                    # or in ours when it is the firm's named subfolder (a Tasks subfolder over EWS).
                    key = wire.record_key_of("task", data) or wire.record_key_from_link(data)
                    if key:
                        ref = session._ref("task", data, list_id)
                        refs.append(OwnedRef(key, ref.item_id, ref.change_key))
                yield refs
        return
    select = "id,changeKey" + (",start,isAllDay" if item_class == "calendar" else "")
    link = session._filter_url(item_class, "ep/value ne ''", select=select, top=top)
    while link:
        page, link = session._page(link)
        refs = []
        for data in page:
            key = wire.record_key_of(item_class, data)
            if key:
                ref = session._ref(item_class, data)
                day = _start_date(session, data) if item_class == "calendar" else ""
                refs.append(OwnedRef(key, ref.item_id, ref.change_key, day))
        yield refs


def _read(
    session: GraphSession, refs: Sequence[ItemRef], select: str
) -> list[dict[str, Any] | ExchangeError]:
    urls = [session._item_url(r.item_id) for r in refs]
    gets = [session._req("GET", f"{url}?$select={select}") for url in urls if url is not None]
    answers = iter(session._run(gets) if gets else [])
    out: list[dict[str, Any] | ExchangeError] = []
    for url in urls:
        if url is None:
            out.append(wire.foreign_id())
            continue
        ans = next(answers)
        out.append(ans if isinstance(ans, ExchangeError) else dict(ans.body or {}))
    return out


def read_owned(
    session: GraphSession, item_class: ItemClass, refs: Sequence[ItemRef]
) -> list[OwnedValues | ExchangeError]:
    return [
        got if isinstance(got, ExchangeError) else owned.from_graph(item_class, got)
        for got in _read(session, refs, owned.SELECT[item_class])
    ]


def read_bodies(
    session: GraphSession, item_class: ItemClass, refs: Sequence[ItemRef]
) -> list[str | ExchangeError]:
    select = "personalNotes" if item_class == "contact" else "body"
    return [
        got if isinstance(got, ExchangeError) else wire.body_text(item_class, got)
        for got in _read(session, refs, select)
    ]
