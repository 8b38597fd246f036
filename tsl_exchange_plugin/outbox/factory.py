"""Open the outbox a queue URL names (one setting picks the store).

* ``None`` / ``""`` / ``"sqlite://"``: SQLite file ``outbox.sqlite3`` in the data directory.
* ``"sqlite:///name.sqlite3"``: that file, relative to the data directory;
  ``"sqlite:////abs/path.sqlite3"``: an absolute path.
* ``"postgresql://..."`` / ``"postgres://..."``: PostgreSQL (libpq URL; an optional
  ``?options=...`` etc. is passed through). The schema is ``tsl_exchange`` unless
  the caller names another.

Errors are ``ValueError`` with a German message for the administrator that says
what to check. A password in the URL is never repeated in a message.
"""

from __future__ import annotations

import os

from .base import Outbox

DEFAULT_SQLITE_FILE = "outbox.sqlite3"


def _describe_pg(url: str) -> str:
    """Host, port, database and user of a libpq URL, without the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "(URL nicht lesbar)"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or "?"
    user = params.get("user") or "?"
    return f"Server {host}:{port}, Datenbank {db!r}, Benutzer {user!r}"


def _driver_detail(exc: Exception, url: str) -> str:
    """The driver's first message line, with the URL's password blanked out (libpq
    does not quote passwords, but a message must never be the place to find out)."""
    from psycopg.conninfo import conninfo_to_dict

    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:
        password = None
    if password:
        detail = detail.replace(str(password), "***")
    return detail


def _open_postgres(url: str, schema: str) -> Outbox:
    import psycopg

    from .postgres import PostgresOutbox, split_schema

    bare, named = split_schema(url)  # "?schema=" is ours, not libpq's: describe the bare URL
    schema = named or schema
    url = bare
    where = _describe_pg(url)
    try:
        return PostgresOutbox(url, schema=schema)
    except psycopg.OperationalError as exc:
        raise ValueError(
            f"Die PostgreSQL-Warteschlange ist nicht erreichbar ({where}; Meldung: "
            f"{_driver_detail(exc, url)}). Bitte prüfen: läuft der Server, stimmen Host und Port, "
            "lässt die Firewall die Verbindung zu, stimmen Benutzer, Passwort und Datenbankname, "
            "und erlaubt pg_hba.conf den Zugang von diesem Rechner?"
        ) from None
    except psycopg.ProgrammingError as exc:
        raise ValueError(
            f"Die Warteschlangen-URL für PostgreSQL ist ungültig ({where}; Meldung: "
            f"{_driver_detail(exc, url)}). Erwartet wird z. B. postgresql://benutzer@server:5432/datenbank."
        ) from None
    except psycopg.Error as exc:
        raise ValueError(
            f"Die PostgreSQL-Warteschlange konnte nicht eingerichtet werden ({where}; Meldung: "
            f"{_driver_detail(exc, url)}). Bitte prüfen, ob der Benutzer in der Datenbank das "
            f"Schema {schema!r} und seine Tabellen anlegen darf."
        ) from None


def _open_sqlite(rest: str, data_dir: str) -> Outbox:
    from .sqlite import SQLiteOutbox

    if rest in ("", "/"):
        path = os.path.join(data_dir, DEFAULT_SQLITE_FILE)
    elif rest.startswith("/"):
        rest = rest[1:]  # "sqlite:///x" -> "x"; "sqlite:////abs/x" -> "/abs/x"
        path = rest if os.path.isabs(rest) else os.path.join(data_dir, rest)
    else:
        raise ValueError(
            f"Die Warteschlangen-URL 'sqlite://{rest}' ist ungültig. Erwartet wird sqlite:///datei.sqlite3 "
            "(relativ zum Datenverzeichnis) oder sqlite:////absoluter/pfad.sqlite3."
        )
    try:
        return SQLiteOutbox(path)
    except OSError as exc:
        raise ValueError(
            f"Die Warteschlangen-Datei {path!r} kann nicht angelegt werden ({exc.strerror}). "
            "Bitte prüfen, ob das Verzeichnis existiert und beschreibbar ist."
        ) from exc
    except Exception as exc:
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            raise ValueError(
                f"Die Warteschlangen-Datei {path!r} kann nicht geöffnet werden ({exc}). "
                "Bitte prüfen: ist es eine SQLite-Datei, ist sie beschreibbar, ist der Datenträger voll?"
            ) from exc
        raise


def open_outbox(url: str | None, data_dir: str, *, pg_schema: str = "tsl_exchange") -> Outbox:
    """The outbox for a queue URL (see module docstring); raises ValueError (German) on problems.

    ``pg_schema`` names the PostgreSQL schema (tests use a fresh one each)."""
    url = (url or "").strip()
    if not url:
        return _open_sqlite("", data_dir)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        return _open_sqlite(rest, data_dir)
    if sep and scheme in ("postgresql", "postgres"):
        return _open_postgres(url, pg_schema)
    shown = scheme if sep else url.split(":", 1)[0]
    raise ValueError(
        f"Unbekannter Warteschlangen-Typ {shown!r}. Erlaubt sind: leer (SQLite im Datenverzeichnis), "
        "sqlite:///datei.sqlite3 oder postgresql://benutzer@server:5432/datenbank."
    )
