"""One backend per mailbox: EWS (Exchange Server, hosted Exchange) or Microsoft Graph (Microsoft 365).

The worker holds one ``ExchangeBackend``; this one hands each mailbox to the backend its account
names (``MailboxAccount.backend``). Each backend is created on first use, so a firm without
Microsoft 365 never imports httpx or msal, and one without EWS never imports exchangelib.

Moving a mailbox between backends: the sync state still holds the other backend's item ids. A
session wraps its backend so that such an id is reported as ``ItemNotFound`` without a request;
the worker then finds the item by its record key (the same extended property on both sides) and
updates it in place, so nothing is created twice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..mapping.items import ExchangeItem
from .base import ExchangeError, ItemClass, ItemNotFound, ItemRef, MailboxAccount, MailboxSession, PerItem

GRAPH_PREFIXES = ("contact:", "calendar:", "task:")


def is_graph_id(item_id: str) -> bool:
    """Ids from the Graph backend name their collection; EWS ids are plain base64."""
    return item_id.startswith(GRAPH_PREFIXES)


def _other(kind: str) -> ItemNotFound:
    return ItemNotFound(
        f"Die gespeicherte Element-ID stammt aus der anderen Schnittstelle als {kind}; das Element wird gesucht."
    )


class AdoptingSession:
    """A session that answers ids of the other backend with ItemNotFound (see module doc)."""

    def __init__(self, inner: MailboxSession, kind: str):
        self.inner = inner
        self.kind = kind

    def _mine(self, item_id: str) -> bool:
        return bool(item_id) and (is_graph_id(item_id) == (self.kind == "graph"))

    def create(self, items: Sequence[ExchangeItem]) -> list[PerItem]:
        return self.inner.create(items)

    def update(self, changes: Sequence[tuple[ItemRef, ExchangeItem]]) -> list[PerItem]:
        mine = [c for c in changes if self._mine(c[0].item_id)]
        done = iter(self.inner.update(mine) if mine else [])
        return [next(done) if self._mine(ref.item_id) else _other(self.kind) for ref, _ in changes]

    def delete(self, refs: Sequence[ItemRef]) -> list[ExchangeError | None]:
        mine = [r for r in refs if self._mine(r.item_id)]
        done = iter(self.inner.delete(mine) if mine else [])
        return [next(done) if self._mine(r.item_id) else _other(self.kind) for r in refs]

    def find_by_keys(self, item_class: ItemClass, record_keys: Sequence[str]) -> dict[str, list[ItemRef]]:
        return self.inner.find_by_keys(item_class, record_keys)

    def find_all_ours(self, item_class: ItemClass) -> dict[str, list[ItemRef]]:
        return self.inner.find_all_ours(item_class)

    def folder_count(self, item_class: ItemClass) -> int:
        return self.inner.folder_count(item_class)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # raw_account, folder(), ... for diagnostics
        return getattr(self.inner, name)


class RoutingBackend:
    """EWS or Graph per mailbox account; either may be given ready-made (tests, benchmarks)."""

    def __init__(self, ews: Any | None = None, graph: Any | None = None):
        self._ews = ews
        self._graph = graph
        self._lock = threading.Lock()
        # The runtime fills this before the first session (the firm's named subfolders, both backends).
        self.target_folders: dict[str, str] = getattr(ews, "target_folders", None) or {}
        self._shared_slots: Any = getattr(ews, "shared_slots", None)
        if self._shared_slots is None:
            self._shared_slots = getattr(graph, "shared_slots", None)

    @property
    def shared_slots(self) -> Any:
        """The queue's store, for limits that hold across processes: requests per EWS server
        (see ``EwsBackend``) and per Microsoft 365 mailbox (see ``GraphBackend``)."""
        return self._shared_slots

    @shared_slots.setter
    def shared_slots(self, value: Any) -> None:
        with self._lock:
            self._shared_slots = value
            if self._ews is not None:
                self._ews.shared_slots = value
            if self._graph is not None:
                self._graph.shared_slots = value

    @property
    def ews(self) -> Any:
        with self._lock:
            if self._ews is None:
                from .ews.backend import EwsBackend  # only here: exchangelib is slow to import

                self._ews = EwsBackend(shared_slots=self._shared_slots)
                self._ews.target_folders = self.target_folders
            return self._ews

    @property
    def graph(self) -> Any:
        with self._lock:
            if self._graph is None:
                from .graph.backend import GraphBackend

                self._graph = GraphBackend(shared_slots=self._shared_slots)
                self._graph.target_folders = self.target_folders
            return self._graph

    def session(self, account: MailboxAccount) -> MailboxSession:
        if account.backend == "graph":
            graph = self.graph
            if getattr(graph, "target_folders", None) is not self.target_folders:
                graph.target_folders.update(self.target_folders)  # a backend given ready-made
            return AdoptingSession(graph.session(account), "graph")
        if self._ews is not None and getattr(self._ews, "target_folders", None) is not self.target_folders:
            self._ews.target_folders.update(self.target_folders)
        return AdoptingSession(self.ews.session(account), "ews")
