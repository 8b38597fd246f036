"""The reference host's settings store: namespaced keys, JSON values, in SQLite."""

from __future__ import annotations

import json
from typing import Any

from tsl_hostapi.reference.db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""


def _dump(namespace: str, key: str, value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Einstellung {namespace}/{key} kann nicht gespeichert werden (kein JSON-Wert): {exc}"
        ) from exc


class SqliteSettingsStore:
    """Implements :class:`tsl_hostapi.types.SettingsStore`.

    Values round-trip through JSON, so a tuple comes back as a list. Setting a
    value of ``None`` deletes the key, in ``set`` as in ``set_many``.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._db.executescript(_SCHEMA)

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        rows = self._db.query("SELECT value FROM settings WHERE namespace=? AND key=?", (namespace, key))
        return json.loads(rows[0][0]) if rows else default

    def set(self, namespace: str, key: str, value: Any) -> None:
        self.set_many(namespace, {key: value})

    def delete(self, namespace: str, key: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM settings WHERE namespace=? AND key=?", (namespace, key))

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        # substr instead of LIKE, so "%" and "_" in a prefix are taken literally.
        rows = self._db.query(
            "SELECT key FROM settings WHERE namespace=? AND substr(key, 1, ?)=? ORDER BY key",
            (namespace, len(prefix), prefix),
        )
        return [r[0] for r in rows]

    def set_many(self, namespace: str, values: dict[str, Any]) -> None:
        """All or nothing: every value is serialised before anything is written."""
        encoded = {k: (None if v is None else _dump(namespace, k, v)) for k, v in values.items()}
        with self._db.transaction() as conn:
            for key, text in encoded.items():
                if text is None:
                    conn.execute("DELETE FROM settings WHERE namespace=? AND key=?", (namespace, key))
                else:
                    conn.execute(
                        "INSERT INTO settings(namespace, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value",
                        (namespace, key, text),
                    )
