"""Every captured exchangelib request, replayed through the engine: answers validate, ids map."""

from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

from tsl_exchange_plugin.sandbox.schema import find_schema_dir, validator

CAPTURES = sorted((find_schema_dir().parent / "ews-reference" / "requests").glob("*.xml"))
ALICE = "alice@example.com"
_ID = re.compile(rb'<t:(ItemId|FolderId) Id="([^"]+)"(?: ChangeKey="([^"]*)")?')
_KIND_HINT = [
    (b"<t:Contact", "Contact"),
    (b"contacts:", "Contact"),
    (b"<t:CalendarItem", "CalendarItem"),
    (b"calendar:", "CalendarItem"),
    (b"<t:Task", "Task"),
    (b"task:", "Task"),
]


def _codes(xml: bytes) -> list[str]:
    return [e.text for e in etree.fromstring(xml).iter("{*}ResponseCode")]


def test_captures_exist():
    assert len(CAPTURES) == 34


def test_replay_every_capture_with_ids_rewritten(engine):
    """Foreign ids are rebound to what the sandbox created, in creation order and by item kind."""
    mapping: dict[bytes, bytes] = {}
    created_items: list[tuple[str, bytes]] = []  # (kind, sandbox id) not yet bound
    created_folders: list[bytes] = []
    current_ck: dict[bytes, bytes] = {}
    answers = {}
    for path in CAPTURES:
        body = path.read_bytes()
        hint = next((k for marker, k in _KIND_HINT if marker in body), None)

        def rewrite(m: re.Match, hint: str | None = hint) -> bytes:
            tag, old, _ck = m.group(1), m.group(2), m.group(3)
            if old not in mapping:
                if tag == b"FolderId" and created_folders:
                    mapping[old] = created_folders.pop(0)
                elif tag == b"ItemId":
                    pick = next((c for c in created_items if hint is None or c[0] == hint), None)
                    if pick is not None:
                        created_items.remove(pick)
                        mapping[old] = pick[1]
            new = mapping.get(old, old)
            ck = current_ck.get(new, b"Zm9yZWlnbg==")
            return b'<t:%s Id="%s" ChangeKey="%s"' % (tag, new, ck)

        body = _ID.sub(rewrite, body)
        status, out = engine.handle(ALICE, body)
        assert status == 200, (path.name, out)
        answers[path.name[:2]] = _codes(out)
        root = etree.fromstring(out)
        for el in root.iter("{*}ItemId", "{*}FolderId"):
            current_ck[el.get("Id").encode()] = el.get("ChangeKey").encode()
        op = path.name.split("-")[1]
        if op == "CreateItem":
            for items in root.iter("{*}Items"):
                for it in items:
                    created_items.append((etree.QName(it).localname, it[0].get("Id").encode()))
        if op == "CreateFolder":
            created_folders.extend(e.get("Id").encode() for e in root.iter("{*}FolderId"))
    assert engine.violations == 0, engine.violation_details()
    # after rewriting, the item conversation succeeds end to end
    for no in (
        "10",
        "11",
        "12",
        "13",
        "14",
        "15",
        "16",
        "17",
        "18",
        "19",
        "20",
        "21",
        "22",
        "23",
        "24",
        "25",
        "26",
        "27",
        "28",
        "29",
        "30",
        "31",
        "32",
        "33",
    ):
        assert set(answers[no]) == {"NoError"}, (no, answers[no])
    assert answers["00"] == ["ErrorInvalidIdMalformed"]  # the version probe only reads the header
    assert "ErrorFolderNotFound" in answers["07"] and "NoError" in answers["07"]
    assert len(answers["07"]) == 31


def test_replay_raw_captures_answer_valid_errors(engine):
    """Unchanged captures carry foreign ids: per-message errors, every answer schema-valid."""
    v = validator()
    for path in CAPTURES:
        status, out = engine.handle(ALICE, path.read_bytes())
        assert status == 200, path.name
        root = etree.fromstring(out)
        svi = root.find("{*}Header/{*}ServerVersionInfo")
        assert (
            svi.get("MajorVersion"),
            svi.get("MinorVersion"),
            svi.get("MajorBuildNumber"),
            svi.get("MinorBuildNumber"),
            svi.get("Version"),
        ) == ("15", "1", "2507", "6", "V2017_07_11")
        payload = root.find("{*}Body")[0]
        assert v.check(payload) is None, path.name
        assert set(_codes(out)) <= {"NoError", "ErrorInvalidIdMalformed", "ErrorFolderNotFound"}, path.name
    assert engine.violations == 0


def test_schema_dir_found_beside_repo():
    d = find_schema_dir()
    assert (d / "types.xsd").is_file() and isinstance(d, Path)
