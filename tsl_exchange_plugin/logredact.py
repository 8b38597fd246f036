"""Keep credentials out of every log line the plugin and its client libraries write.

exchangelib logs each request's headers, at DEBUG after every answer and at ERROR when a
request fails, and those headers carry ``Authorization: Basic <user:password in base64>``
or an NTLM token (from which a password can be cracked offline). The host decides the
log level, so the plugin cannot rely on DEBUG being off: a filter on the loggers of those
libraries rewrites a record before any handler sees it.

A logging filter only applies to records created on the logger it is attached to (not to
records that propagate up from children), so it is attached to every existing logger of
the libraries concerned; ``install`` is cheap and idempotent and is called again whenever
a backend session opens, after the libraries' modules (and their loggers) exist.
"""

from __future__ import annotations

import base64
import logging
import re
import threading

# Libraries whose loggers can see request headers, and our own.
LOGGER_PREFIXES = (
    "exchangelib",
    "requests_ntlm",
    "spnego",
    "urllib3",
    "requests",
    "httpx",
    "httpcore",
    "msal",
    "tsl_exchange_plugin",
)

MASK = "***"

# An Authorization or Proxy-Authorization header in any of the shapes it is logged in
# (``Authorization: Basic …``, a dict's ``'Authorization': 'NTLM …'``), and bare
# challenge/response tokens of the connection-based schemes.
_HEADER = re.compile(
    r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?\s*"
    r"(?:basic|ntlm|negotiate|bearer|digest)\s+)[^\s'\",}]+"
)
_TOKEN = re.compile(r"(?i)\b((?:ntlm|negotiate|bearer)\s+)[A-Za-z0-9+/=._~-]{16,}")


class _Secrets:
    """Passwords known to this process, in the forms they can show up in a log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: frozenset[str] = frozenset()

    def add(self, username: str, password: str) -> None:
        if not password:
            return
        forms = {password}
        for user in {username, username.split("\\")[-1]}:
            forms.add(base64.b64encode(f"{user}:{password}".encode()).decode())
        with self._lock:
            self._forms = self._forms | {f for f in forms if len(f) >= 4}

    def forms(self) -> frozenset[str]:
        return self._forms


_secrets = _Secrets()


def scrub(text: str) -> str:
    """``text`` with every credential it contains replaced by ``***``."""
    text = _HEADER.sub(lambda m: m.group(1) + MASK, text)
    text = _TOKEN.sub(lambda m: m.group(1) + MASK, text)
    for secret in _secrets.forms():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its traceback text) without credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; do not lose the record
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


_FILTER = RedactingFilter()
_install_lock = threading.Lock()


def remember(username: str, password: str) -> None:
    """Also mask this password (and its Basic form) wherever it appears."""
    _secrets.add(username, password)
    install()


def install() -> None:
    """Attach the filter to every existing logger of the libraries concerned."""
    with _install_lock:
        names = [
            name
            for name in list(logging.Logger.manager.loggerDict)
            if any(name == p or name.startswith(p + ".") for p in LOGGER_PREFIXES)
        ]
        for name in {*LOGGER_PREFIXES, *names}:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
