"""Helpers shared by the mapping modules: text cleaning, Exchange length limits, the body layout.

The body of every item the plugin writes has two parts::

    <text the plugin owns>

    --- Ihre Notizen unterhalb dieser Linie bleiben erhalten ---
    <what the user wrote on the phone or in Outlook>

The mapping produces only the first part plus the marker line. The backend keeps
whatever stands below the marker in the mailbox when it updates an item
(``merge_body``). The plugin text never contains the marker itself
(``neutralise_marker``), so splitting on its first occurrence is unambiguous.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable

USER_NOTES_MARKER = "--- Ihre Notizen unterhalb dieser Linie bleiben erhalten ---"

# Exchange limits. Given name, middle name and surname are 255-character fields in EWS
# (exchangelib enforces this with CharField and refuses longer values before sending).
NAME_LIMIT = 255
# Display name, file-as, company, department, job title and the like are not limited by the
# schema, but Outlook and phones handle them as short single-line strings; 255 keeps them sane.
# The subject is limited to 255 characters by Exchange (EWS reference, "Subject" element:
# "The subject is limited to 255 characters"); exchangelib refuses a longer one before sending.
# Cutting a subject loses only its tail, and the full text stays in the host, so these fields
# are trimmed rather than refused.
SHORT_TEXT_LIMIT = 255
# Category names are limited to 255 characters by Exchange.
CATEGORY_LIMIT = 255
# E-mail addresses: 320 is the SMTP maximum (64 local part + @ + 255 domain).
EMAIL_LIMIT = 320
PHONE_LIMIT = 255
URL_LIMIT = 2048

# Dates a mailbox can hold. Exchange keeps times as FILETIME (PT_SYSTIME, from 1601-01-01 UTC);
# Outlook shows 1 January 4501 as "no date" ("Keine"), and the recurrence format of MS-OXOCAL
# writes 31 August 4500 for "no end": the last day clients treat as a real date. exchangelib also writes years below 1000 without their leading zeros, which
# is no xs:dateTime at all: the server refuses the whole request (ErrorSchemaValidation).
EXCHANGE_MIN_DATE = dt.date(1601, 1, 1)
EXCHANGE_MAX_DATE = dt.date(4500, 8, 31)
# ReminderMinutesBeforeStartType in Microsoft's types.xsd: xs:int 0..2629800 (five years), or
# the marker 1525252321 which the plugin never sends. A larger value fails schema validation.
MAX_REMINDER_MINUTES = 2_629_800


# Cc (C0 but tab and newline, DEL, C1), Cs (lone surrogates), U+FFFE and U+FFFF; "\r" is gone
# before this applies. One regex pass: clean_text runs for every field of every item pushed.
_UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


class MappingError(ValueError):
    """A host record cannot become an Exchange item. ``str(err)`` is German, for the status view."""


def clean_text(value: str | None) -> str:
    """Remove what XML 1.0 or a phone cannot show; keep newlines, tabs, umlauts and emoji.

    Line endings become ``\\n``. Control characters (C0 except tab and newline, DEL, C1),
    lone surrogates and the non-characters U+FFFE/U+FFFF are dropped: exchangelib would
    send them and the server (or the XML parser) would reject the whole request.
    """
    if not value:
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    return _UNSHOWABLE.sub("", text)


def clean_line(value: str | None) -> str:
    """``clean_text`` for single-line fields: tabs and newlines become spaces, runs collapse, ends trimmed."""
    text = clean_text(value).replace("\n", " ").replace("\t", " ")
    return " ".join(text.split())


def trim(value: str, limit: int) -> str:
    """Cut ``value`` to at most ``limit`` characters (code points), never inside a surrogate pair
    (Python strings have none after ``clean_text``)."""
    return value if len(value) <= limit else value[:limit].rstrip()


def short(value: str | None, limit: int = SHORT_TEXT_LIMIT) -> str:
    """A cleaned, single-line, length-limited field value."""
    return trim(clean_line(value), limit)


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Schemes whose URIs carry "//host[:port]"; Exchange's (.NET's) anyURI check parses that part.
_AUTHORITY_SCHEMES = frozenset({"http", "https", "ftp"})
_HOST_LABEL = re.compile(r"[^\W_]([\w-]*[^\W_])?")  # letters of any script, digits, inner "-" and "_"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def is_valid_website(value: str) -> bool:
    """True if ``value`` can be a contact's website (EWS BusinessHomePage, an xs:anyURI).

    Stricter than the server on purpose, so that what passes is never refused: no blanks or
    controls, none of the characters RFC 3986 excludes, no stray "%"; with http(s)/ftp a real
    host (or [IPv6]) and a numeric port. Without a scheme ("www.kanzlei.de") it is a relative
    reference, which Exchange accepts and phones open as a web address.
    """
    if not value or len(value) > URL_LIMIT or "##" in value:
        return False
    if clean_text(value) != value or any(ch.isspace() or ch in '<>"{}|\\^`' for ch in value):
        return False
    if _BAD_PERCENT.search(value):
        return False
    match = _URL_SCHEME.match(value)
    if match is None or match.group(1).lower() not in _AUTHORITY_SCHEMES:
        # Brackets only delimit an IPv6 host (RFC 3986, 3.2.2); anywhere else a URI parser refuses them.
        if "[" in value or "]" in value:
            return False
        if match is None:
            # A relative reference whose first segment holds ":" would read as a scheme (RFC 3986, 4.2).
            return ":" not in re.split(r"[/?#]", value, maxsplit=1)[0]
        return len(value) > match.end()
    rest = value[match.end() :]
    if not rest.startswith("//"):
        return False
    full_authority, *tail = re.split(r"[/?#]", rest[2:], maxsplit=1)
    if any("[" in t or "]" in t for t in tail):
        return False
    authority = full_authority.rpartition("@")[2]
    host, port = authority, ""
    if authority.startswith("["):
        inner, _, after = authority[1:].partition("]")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return False
        if after and not after.startswith(":"):
            return False
        port = after[1:]
    else:
        host, _, port = authority.partition(":")
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        if not host or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            return False
    return not port or (port.isascii() and port.isdigit() and int(port) <= 65535)


def clean_categories(values: Iterable[str]) -> tuple[str, ...]:
    """Cleaned categories, empty ones dropped, duplicates (case-insensitive, as Outlook compares) removed."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in values:
        name = short(raw, CATEGORY_LIMIT)
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            out.append(name)
    return tuple(out)


def case_line(file_number: str, rubrum: str) -> str:
    """How an item names its case: ``Az. 123/26 – Müller ./. Schmidt wegen Forderung``."""
    number = clean_line(file_number)
    title = clean_line(rubrum)
    if number and title:
        return f"Az. {number} – {title}"
    if number:
        return f"Az. {number}"
    return title


def neutralise_marker(text: str) -> str:
    """Keep the marker out of plugin-owned text, so the first marker in a body is always ours."""
    return text.replace(USER_NOTES_MARKER, USER_NOTES_MARKER.strip("- "))


def compose_body(sections: Iterable[str]) -> str:
    """Plugin-owned body: the non-empty sections separated by blank lines, then the marker line."""
    parts = [neutralise_marker(s.strip("\n")) for s in sections if s and s.strip()]
    text = "\n\n".join(parts)
    return f"{text}\n\n{USER_NOTES_MARKER}\n" if text else f"{USER_NOTES_MARKER}\n"


def split_body(body: str | None) -> tuple[str, str]:
    """Split a body from the mailbox into (plugin part, user part).

    The user part is everything after the marker line (without the newline that ends the
    marker). A body without a marker has no user part we are allowed to keep: the plugin
    wrote the marker at create, so a missing marker means the user removed it.
    """
    text = (body or "").replace("\r\n", "\n")
    head, sep, tail = text.partition(USER_NOTES_MARKER)
    if not sep:
        return text, ""
    if tail.startswith("\n"):
        tail = tail[1:]
    return head, tail


def merge_body(new_body: str, current_body: str | None) -> str:
    """The new plugin text with the user's notes from the mailbox kept below the marker."""
    _, user_part = split_body(current_body)
    if not user_part.strip():
        return new_body
    base = new_body if USER_NOTES_MARKER in new_body else compose_body([new_body])
    if not base.endswith("\n"):
        base += "\n"
    return base + user_part
