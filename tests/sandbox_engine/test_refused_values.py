"""The sandbox refuses what Exchange refuses, the way Exchange does.

A value the schema's type does not allow fails the whole request with the SOAP fault
ErrorSchemaValidation (nothing is processed); a value the schema allows but a mailbox cannot
hold fails only its item, in its own ResponseMessage.
"""

from __future__ import annotations

import pytest
from lxml import etree

from tsl_exchange_plugin.sandbox.engine import SandboxEngine

ALICE = "alice@example.com"
NS = (
    'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
    'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"'
)
HEADER = (
    '<t:RequestServerVersion Version="Exchange2016"/>'
    '<t:TimeZoneContext><t:TimeZoneDefinition Id="W. Europe Standard Time"/></t:TimeZoneContext>'
)


def create(engine: SandboxEngine, *contacts: str) -> tuple[int, etree._Element]:
    items = "".join(contacts)
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope {NS}><s:Header>{HEADER}</s:Header><s:Body>'
        f'<m:CreateItem MessageDisposition="SaveOnly"><m:SavedItemFolderId>'
        f'<t:DistinguishedFolderId Id="contacts"/></m:SavedItemFolderId><m:Items>{items}</m:Items>'
        f"</m:CreateItem></s:Body></s:Envelope>"
    )
    status, out = engine.handle(ALICE, body.encode())
    return status, etree.fromstring(out)


def contact(surname: str, extra: str = "") -> str:
    # Birthday and BusinessHomePage stand between GivenName and Surname in ContactItemType.
    return f"<t:Contact><t:GivenName>Erika</t:GivenName>{extra}<t:Surname>{surname}</t:Surname></t:Contact>"


def codes(root: etree._Element) -> list[str]:
    return [e.text for e in root.iter("{*}ResponseCode")]


def stored(engine: SandboxEngine) -> list[str]:
    return sorted(i["surname"] for i in engine.list_items(ALICE, "contacts"))


@pytest.mark.parametrize(
    "website",
    [
        "http://www.kanzlei müller.de",
        "http://kanzlei.de:80a",
        "http://[kanzlei.de]/",
        "http:kanzlei.de",
        "  ",
    ],
)
def test_a_website_that_is_no_uri_fails_the_whole_request(engine, website):
    status, root = create(
        engine, contact("Gut"), contact("Schlecht", f"<t:BusinessHomePage>{website}</t:BusinessHomePage>")
    )
    assert status == 500
    assert root.findtext(".//faultcode").endswith("ErrorSchemaValidation")
    assert "anyURI" in root.findtext(".//faultstring")
    assert stored(engine) == []  # refused before anything was processed


@pytest.mark.parametrize(
    "website", ["https://www.kanzlei-mueller.de", "www.kanzlei.de", "https://müller.de/a b", "mailto:x@y.de"]
)
def test_a_website_exchange_accepts_is_stored(engine, website):
    status, root = create(engine, contact("Gut", f"<t:BusinessHomePage>{website}</t:BusinessHomePage>"))
    assert (status, codes(root)) == (200, ["NoError"])


@pytest.mark.parametrize(
    "birthday",
    ["9999-12-31T11:59:00Z", "1500-06-01T11:59:00Z", "4501-01-01T00:00:00Z", "9999-12-31T23:00:00-05:00"],
)
def test_a_date_a_mailbox_cannot_hold_fails_only_its_item(engine, birthday):
    status, root = create(
        engine,
        contact("Erster"),
        contact("Falsch", f"<t:Birthday>{birthday}</t:Birthday>"),
        contact("Dritter"),
    )
    assert status == 200
    assert codes(root) == ["NoError", "ErrorValueOutOfRange", "NoError"]
    assert stored(engine) == ["Dritter", "Erster"]


@pytest.mark.parametrize("birthday", ["1601-01-01T11:59:00Z", "1984-02-29T11:59:00Z", "4500-08-31T11:59:00Z"])
def test_a_date_inside_the_mailbox_range_is_stored(engine, birthday):
    status, root = create(engine, contact("Gut", f"<t:Birthday>{birthday}</t:Birthday>"))
    assert (status, codes(root)) == (200, ["NoError"])
