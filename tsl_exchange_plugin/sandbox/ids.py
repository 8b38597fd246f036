"""Opaque base64 ids and change keys, like Exchange's (the sandbox's own layout).

An id is base64 of a 4-byte tag (``TSLI`` item, ``TSLF`` folder) and 16 random bytes. Ids
that do not decode to that layout are malformed (ErrorInvalidIdMalformed), as foreign
Exchange ids are to a real server.
"""

from __future__ import annotations

import base64
import binascii
import os

ITEM_TAG = b"TSLI"
FOLDER_TAG = b"TSLF"


def new_id(tag: bytes) -> str:
    return base64.b64encode(tag + os.urandom(16)).decode("ascii")


def new_item_id() -> str:
    return new_id(ITEM_TAG)


def new_folder_id() -> str:
    return new_id(FOLDER_TAG)


def new_change_key() -> str:
    # Exchange change keys are base64 of a small binary blob that starts with a length prefix.
    return base64.b64encode(b"\x10\x00\x00\x00" + os.urandom(14)).decode("ascii")


def is_well_formed(value: str | None, tag: bytes) -> bool:
    if not value:
        return False
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return len(raw) == 20 and raw[:4] == tag
