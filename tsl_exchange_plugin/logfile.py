"""The plugin's own log file: ``exchange-sync.log`` in its data directory, rotated, without secrets.

An administrator who asks "what did the plugin do last night" needs a file, whatever the host
does with its own logging. The handler hangs on the loggers of the plugin and of its client
libraries (the same list ``logredact`` guards), so the file holds what they log at the level the
host set (Python's default: warnings and errors; ``tsl-exchange … -v``: also information).

The credential filter sits on the handler as well as on the loggers: a logger's filter only sees
records created on that very logger, a handler's filter sees every record that reaches it,
including those a child logger created before ``logredact.install`` knew it. So no record
reaches the file unscrubbed.

Several runtimes of one process on one data directory (two host instances in a test) share one
handler: two handlers rotating the same file would rename it under each other.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

from . import logredact

LOG_FILE_NAME = "exchange-sync.log"
MAX_BYTES = 5 * 1024 * 1024
"""Size at which the file is rotated: a day's warnings of a large firm fit many times over."""
BACKUP_COUNT = 5
"""Rotated files kept (``exchange-sync.log.1`` … ``.5``): at most 30 MB on disk."""
FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


class _PrivateRotatingFileHandler(RotatingFileHandler):
    """Creates each file readable only by the host's user: the log names clients and cases."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stream = open(fd, self.mode, encoding=self.encoding, errors=self.errors)  # noqa: SIM115
        assert isinstance(stream, io.TextIOWrapper)  # a text mode, as logging opens it
        return stream


_lock = threading.Lock()
_handlers: dict[str, tuple[logging.Handler, int]] = {}


def log_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / LOG_FILE_NAME


def attach(data_dir: str | Path) -> Path:
    """Start writing the plugin's log to ``data_dir``; call ``detach`` with the same directory
    when the runtime closes. Returns the file's path."""
    path = log_path(data_dir)
    key = str(path.resolve())
    logredact.install()
    with _lock:
        handler, users = _handlers.get(key, (None, 0))
        if handler is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = _PrivateRotatingFileHandler(
                path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8", delay=True
            )
            handler.setFormatter(logging.Formatter(FORMAT))
            handler.addFilter(logredact.RedactingFilter())
            for name in logredact.LOGGER_PREFIXES:
                logging.getLogger(name).addHandler(handler)
        _handlers[key] = (handler, users + 1)
    return path


def detach(data_dir: str | Path) -> None:
    key = str(log_path(data_dir).resolve())
    with _lock:
        handler, users = _handlers.get(key, (None, 0))
        if handler is None:
            return
        if users > 1:
            _handlers[key] = (handler, users - 1)
            return
        del _handlers[key]
        for name in logredact.LOGGER_PREFIXES:
            logging.getLogger(name).removeHandler(handler)
    handler.close()


def flush(data_dir: str | Path) -> None:
    """Write out what is buffered (tests read the file)."""
    with _lock:
        entry = _handlers.get(str(log_path(data_dir).resolve()))
    if entry is not None:
        entry[0].flush()
