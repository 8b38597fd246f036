"""SQLite persistence for sandbox mailboxes: folders and items as typed JSON rows.

One connection shared by all threads behind the engine's lock; WAL so a second engine (or
an inspector) on the same directory can read while this one writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailboxes (email TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS folders (
    id TEXT PRIMARY KEY, mailbox TEXT NOT NULL, parent_id TEXT, distinguished TEXT,
    display_name TEXT NOT NULL, folder_class TEXT, change_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS folders_mb ON folders(mailbox);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, mailbox TEXT NOT NULL,
    folder_id TEXT NOT NULL, kind TEXT NOT NULL, change_key TEXT NOT NULL,
    data TEXT NOT NULL, ext TEXT NOT NULL, created TEXT NOT NULL, modified TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_folder ON items(mailbox, folder_id);
"""

_ITEM_COLS = "id, mailbox, folder_id, kind, change_key, data, ext, created, modified"
_FOLDER_COLS = "id, mailbox, parent_id, distinguished, display_name, folder_class, change_key"


def _item(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "mailbox": row[1],
        "folder_id": row[2],
        "kind": row[3],
        "change_key": row[4],
        "data": json.loads(row[5]),
        "ext": json.loads(row[6]),
        "created": row[7],
        "modified": row[8],
    }


def _folder(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "mailbox": row[1],
        "parent_id": row[2],
        "distinguished": row[3],
        "display_name": row[4],
        "folder_class": row[5],
        "change_key": row[6],
    }


class Store:
    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / "sandbox.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    # transactions: the engine wraps every request in one
    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # mailboxes
    def has_mailbox(self, email: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM mailboxes WHERE email=?", (email.lower(),)).fetchone() is not None
        )

    def add_mailbox(self, email: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO mailboxes(email) VALUES (?)", (email.lower(),))

    # folders
    def folders(self, mailbox: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE mailbox=? ORDER BY rowid", (mailbox,)
        )
        return [_folder(r) for r in rows]

    def folder(self, mailbox: str, folder_id: str) -> dict[str, Any] | None:
        r = self.db.execute(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE mailbox=? AND id=?", (mailbox, folder_id)
        ).fetchone()
        return _folder(r) if r else None

    def distinguished(self, mailbox: str, name: str) -> dict[str, Any] | None:
        r = self.db.execute(
            f"SELECT {_FOLDER_COLS} FROM folders WHERE mailbox=? AND distinguished=?", (mailbox, name)
        ).fetchone()
        return _folder(r) if r else None

    def insert_folder(self, f: dict[str, Any]) -> None:
        self.db.execute(
            f"INSERT INTO folders({_FOLDER_COLS}) VALUES (?,?,?,?,?,?,?)",
            (
                f["id"],
                f["mailbox"],
                f["parent_id"],
                f["distinguished"],
                f["display_name"],
                f["folder_class"],
                f["change_key"],
            ),
        )

    def delete_folder(self, folder_id: str) -> None:
        self.db.execute("DELETE FROM items WHERE folder_id=?", (folder_id,))
        self.db.execute("DELETE FROM folders WHERE id=?", (folder_id,))

    def item_counts(self, mailbox: str) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT folder_id, COUNT(*) FROM items WHERE mailbox=? GROUP BY folder_id", (mailbox,)
        )
        return {r[0]: r[1] for r in rows}

    # items
    def items(self, mailbox: str, folder_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            f"SELECT {_ITEM_COLS} FROM items WHERE mailbox=? AND folder_id=? ORDER BY seq",
            (mailbox, folder_id),
        )
        return [_item(r) for r in rows]

    def item(self, mailbox: str, item_id: str) -> dict[str, Any] | None:
        r = self.db.execute(
            f"SELECT {_ITEM_COLS} FROM items WHERE mailbox=? AND id=?", (mailbox, item_id)
        ).fetchone()
        return _item(r) if r else None

    def insert_item(self, it: dict[str, Any]) -> None:
        self.db.execute(
            f"INSERT INTO items({_ITEM_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                it["id"],
                it["mailbox"],
                it["folder_id"],
                it["kind"],
                it["change_key"],
                json.dumps(it["data"], ensure_ascii=False),
                json.dumps(it["ext"], ensure_ascii=False),
                it["created"],
                it["modified"],
            ),
        )

    def update_item(self, it: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE items SET change_key=?, data=?, ext=?, modified=? WHERE id=?",
            (
                it["change_key"],
                json.dumps(it["data"], ensure_ascii=False),
                json.dumps(it["ext"], ensure_ascii=False),
                it["modified"],
                it["id"],
            ),
        )

    def delete_item(self, item_id: str) -> None:
        self.db.execute("DELETE FROM items WHERE id=?", (item_id,))
