"""Contact values Exchange cannot hold never reach it; the contact is still pushed and says why."""

from __future__ import annotations

import datetime as dt

import pytest

from tsl_exchange_plugin.mapping.common import EXCHANGE_MAX_DATE, EXCHANGE_MIN_DATE, is_valid_website
from tsl_exchange_plugin.mapping.contact import map_contact
from tsl_hostapi.types import Contact


def m(**kw):
    return map_contact(Contact(id="1", surname="Muster", **kw), record_key="contact:1")


@pytest.mark.parametrize(
    "website",
    [
        "https://www.kanzlei-mueller.de",
        "http://kanzlei.de:8080/impressum?x=1#kontakt",
        "www.kanzlei.de",
        "kanzlei.de/%C3%BC",
        "https://müller-partner.de",
        "http://[2001:db8::1]/",
        "mailto:kanzlei@example.de",
    ],
)
def test_a_website_exchange_accepts_is_kept(website):
    assert m(website=website).business_homepage == website


@pytest.mark.parametrize(
    "website",
    [
        "http://www.kanzlei müller.de",  # a blank in the host: Exchange refuses the whole request
        "http://kanzlei.de:80a",  # no port
        "http://kanzlei.de:99999",
        "http://[kanzlei.de]/",
        "http:kanzlei.de",
        "http://",
        "siehe Briefkopf",
        "100%",
        "a##b",
        "[",  # brackets only around an IPv6 host (found by the property test against the sandbox)
        "kanzlei.de/[alt]",
        ":",
        "1:kanzlei",
        "https://kanzlei.de/a[1]",
    ],
)
def test_a_website_exchange_refuses_goes_to_the_body_with_a_note(website):
    assert not is_valid_website(website)
    item = m(website=website)
    assert item.business_homepage == ""
    assert f"Ungültige Webadresse (nicht als Webseite übernommen): {website}" in item.body


@pytest.mark.parametrize(
    "birthday", [dt.date(1, 1, 1), dt.date(999, 5, 5), dt.date(1600, 12, 31), dt.date(9999, 12, 31)]
)
def test_a_birthday_outside_what_a_mailbox_holds_goes_to_the_body(birthday):
    item = m(birthday=birthday)
    assert item.birthday is None
    shown = f"{birthday.day:02d}.{birthday.month:02d}.{birthday.year:04d}"
    assert f"(nicht als Geburtstag übernommen): {shown}" in item.body


@pytest.mark.parametrize("birthday", [EXCHANGE_MIN_DATE, dt.date(1930, 2, 28), EXCHANGE_MAX_DATE])
def test_a_birthday_inside_the_range_is_kept(birthday):
    item = m(birthday=birthday)
    assert item.birthday == birthday
    assert "Geburtstag" not in item.body
