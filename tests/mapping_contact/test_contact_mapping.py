"""Rules of mapping/contact.py and mapping/common.py, one test per rule."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsl_exchange_plugin.mapping.common import (
    USER_NOTES_MARKER,
    MappingError,
    case_line,
    clean_text,
    compose_body,
    merge_body,
    split_body,
)
from tsl_exchange_plugin.mapping.contact import PHONE_LABELS, is_valid_email, map_contact
from tsl_exchange_plugin.mapping.items import ContactItem, content_hash
from tsl_hostapi.types import PHONE_KINDS, Contact, Phone, PostalAddress


def m(**kw) -> ContactItem:
    return map_contact(Contact(id="1", **kw), record_key="contact:1")


def plugin_part(item: ContactItem) -> str:
    head, user = split_body(item.body)
    assert user == ""
    return head


def phones(item: ContactItem) -> dict[str, str]:
    return {p.label: p.number for p in item.phone_numbers}


# ----------------------------------------------------------------------------- names


def test_person_display_and_file_as_in_german_order():
    item = m(given_name="Anna", middle_name="Maria", surname="Müller", generation="jun.")
    assert item.display_name == "Anna Maria Müller jun."
    assert item.file_as == "Müller, Anna"
    assert (item.given_name, item.middle_name, item.surname, item.generation) == (
        "Anna",
        "Maria",
        "Müller",
        "jun.",
    )
    assert item.record_key == "contact:1"


@pytest.mark.parametrize("title", ["Dr.", "Prof. Dr."])
def test_academic_title_in_display_name_and_body_not_nickname(title):
    item = m(title=title, given_name="Anna", surname="Müller")
    assert item.display_name == f"{title} Anna Müller"
    assert item.file_as == "Müller, Anna"
    assert item.nickname == ""
    assert item.title == title
    assert f"Titel: {title}" in plugin_part(item)


def test_salutation_goes_to_body_header_not_display_name():
    item = m(salutation="Frau", title="Dr.", given_name="Anna", surname="Müller")
    assert item.display_name == "Dr. Anna Müller"
    assert plugin_part(item).splitlines()[0] == "Anrede: Frau"


def test_only_surname_or_only_given_name():
    assert m(surname="Müller").file_as == "Müller"
    assert m(given_name="Anna").file_as == "Anna"
    assert m(given_name="Anna").display_name == "Anna"


def test_organisation_uses_company_for_display_and_file_as():
    item = m(kind="organisation", company="Müller & Söhne GmbH", department="Recht")
    assert item.company_name == "Müller & Söhne GmbH"
    assert item.display_name == item.file_as == "Müller & Söhne GmbH"
    assert item.department == "Recht"


def test_person_with_company_keeps_person_display():
    item = m(given_name="Anna", surname="Müller", company="ACME AG", job_title="Justiziarin")
    assert item.display_name == "Anna Müller"
    assert item.company_name == "ACME AG"
    assert item.job_title == "Justiziarin"


def test_person_without_name_but_company_is_shown_as_company():
    item = m(company="ACME AG")
    assert item.display_name == item.file_as == "ACME AG"


@pytest.mark.parametrize("kind", ["person", "organisation"])
def test_no_name_no_company_raises_german_mapping_error(kind):
    with pytest.raises(MappingError, match="weder Namen noch Firma"):
        m(kind=kind, title="Dr.", salutation="Herr", emails=("a@b.de",), given_name=" \t", company="\x07")


def test_long_names_cut_to_exchange_limit():
    item = m(given_name="A" * 300, surname="B" * 300, company="C" * 300)
    assert len(item.given_name) == 255 and len(item.surname) == 255 and len(item.company_name) == 255
    assert len(item.display_name) <= 255 and len(item.file_as) <= 255


# ----------------------------------------------------------------------------- e-mails


def test_three_emails_then_body():
    emails = ("a@x.de", "b@x.de", "c@x.de", "d@x.de", "e@x.de")
    item = m(surname="M", emails=emails)
    assert [(e.label, e.address) for e in item.email_addresses] == [
        ("EmailAddress1", "a@x.de"),
        ("EmailAddress2", "b@x.de"),
        ("EmailAddress3", "c@x.de"),
    ]
    text = plugin_part(item)
    assert "Weitere E-Mail-Adresse: d@x.de" in text and "Weitere E-Mail-Adresse: e@x.de" in text


def test_duplicate_email_dropped_case_insensitively():
    item = m(surname="M", emails=("a@x.de", "A@X.DE", "b@x.de"))
    assert [e.address for e in item.email_addresses] == ["a@x.de", "b@x.de"]


@pytest.mark.parametrize(
    "bad", ["keine Adresse", "anna müller@x.de", "anna@x.de\x07", "@x.de", "anna@", "siehe Akte"]
)
def test_invalid_email_not_in_field_but_in_body(bad):
    item = m(surname="M", emails=(bad, "ok@x.de"))
    assert [e.address for e in item.email_addresses] == ["ok@x.de"]
    assert "Ungültige E-Mail-Adresse (nicht als E-Mail übernommen): " + clean_text(bad) in plugin_part(item)


def test_email_validity_rules():
    assert is_valid_email("anna.müller@kanzlei.de")
    assert not is_valid_email("a b@c.de")
    assert not is_valid_email("a@b\tc.de")
    assert not is_valid_email("")


# ----------------------------------------------------------------------------- phones


def test_every_phone_kind_has_its_label():
    item = m(surname="M", phones=tuple(Phone(k, f"+49 30 {i}") for i, k in enumerate(PHONE_KINDS)))
    assert phones(item) == {PHONE_LABELS[k]: f"+49 30 {i}" for i, k in enumerate(PHONE_KINDS)}
    assert set(PHONE_LABELS.values()) == {
        "BusinessPhone",
        "BusinessPhone2",
        "MobilePhone",
        "HomePhone",
        "BusinessFax",
        "HomeFax",
        "OtherTelephone",
    }


def test_second_business_goes_to_business2_further_to_body():
    item = m(surname="M", phones=(Phone("business", "1"), Phone("business", "2"), Phone("business", "3")))
    assert phones(item) == {"BusinessPhone": "1", "BusinessPhone2": "2"}
    assert "Weitere Telefonnummer (Geschäftlich): 3" in plugin_part(item)


def test_duplicate_mobile_goes_to_body():
    item = m(surname="M", phones=(Phone("mobile", "0171 1"), Phone("mobile", "0171 2")))
    assert phones(item) == {"MobilePhone": "0171 1"}
    assert "Weitere Telefonnummer (Mobil): 0171 2" in plugin_part(item)


def test_unknown_phone_kind_takes_other_then_body():
    item = m(surname="M", phones=(Phone("pager", "1"), Phone("car", "2")))
    assert phones(item) == {"OtherTelephone": "1"}
    assert "Weitere Telefonnummer (car): 2" in plugin_part(item)


def test_no_phones_maps_to_empty_tuple_for_clearing():
    item = m(surname="M", phones=(Phone("mobile", "  "),))
    assert item.phone_numbers == ()
    assert item.email_addresses == () and item.physical_addresses == () and item.categories == ()
    assert item.company_name == "" and item.business_homepage == "" and item.birthday is None


# ----------------------------------------------------------------------------- addresses


def test_addresses_by_kind_and_duplicates_in_body():
    item = m(
        surname="M",
        addresses=(
            PostalAddress("business", "Hauptstr. 1", "10115", "Berlin", "", "Deutschland"),
            PostalAddress("home", "Gartenweg 2", "80331", "München", "Bayern"),
            PostalAddress("other", "Postfach 3"),
            PostalAddress("business", "Nebenstr. 4", "20095", "Hamburg"),
            PostalAddress("home"),
        ),
    )
    by_label = {a.label: a for a in item.physical_addresses}
    assert list(by_label) == ["Business", "Home", "Other"]
    b = by_label["Business"]
    assert (b.street, b.zipcode, b.city, b.country) == ("Hauptstr. 1", "10115", "Berlin", "Deutschland")
    assert by_label["Home"].state == "Bayern"
    assert "Weitere Adresse (Geschäftlich): Nebenstr. 4, 20095 Hamburg" in plugin_part(item)


def test_multiline_street_kept():
    item = m(surname="M", addresses=(PostalAddress("business", "c/o Kanzlei\r\nHauptstr. 1\x00"),))
    assert item.physical_addresses[0].street == "c/o Kanzlei\nHauptstr. 1"


# ----------------------------------------------------------------------------- other fields


def test_birthday_29_february_and_website():
    item = m(surname="M", birthday=dt.date(1984, 2, 29), website="https://kanzlei.de")
    assert item.birthday == dt.date(1984, 2, 29)
    assert item.business_homepage == "https://kanzlei.de"


def test_categories_cleaned_and_deduplicated():
    item = m(surname="M", categories=("Mandant", "mandant", "", "Gegner\x01"))
    assert item.categories == ("Mandant", "Gegner")


def test_case_refs_listed_in_body():
    item = map_contact(
        Contact(id="1", surname="M"),
        record_key="contact:1",
        case_refs=[case_line("123/26", "Müller ./. Schmidt wegen Forderung")],
    )
    assert "Akten: Az. 123/26 – Müller ./. Schmidt wegen Forderung" in plugin_part(item)


# ----------------------------------------------------------------------------- text


def test_notes_5000_chars_emoji_umlauts_unchanged():
    notes = ("Grüße aus Köln 😀👩‍⚖️ ß " * 250)[:5000]
    assert len(notes) == 5000
    item = m(surname="Müller 😀", notes=notes)
    assert notes.strip() in item.body
    assert item.surname == "Müller 😀"


def test_control_characters_removed_newlines_and_tabs_kept():
    item = m(surname="Mül\x00ler\x1b", notes="Zeile 1\r\nZeile\t2\x07\x7f\x85\rZeile 3")
    assert item.surname == "Müller"
    assert "Zeile 1\nZeile\t2\nZeile 3" in item.body


def test_body_ends_with_marker_line():
    item = m(surname="M", notes="Notiz")
    assert item.body == f"Notiz\n\n{USER_NOTES_MARKER}\n"
    assert m(surname="M").body == f"{USER_NOTES_MARKER}\n"


def test_marker_in_host_notes_is_neutralised():
    item = m(surname="M", notes=f"a\n{USER_NOTES_MARKER}\nb")
    assert item.body.count(USER_NOTES_MARKER) == 1
    assert item.body.endswith(USER_NOTES_MARKER + "\n")


def test_mapping_is_deterministic_for_hashing():
    c = Contact(id="1", surname="M", phones=(Phone("mobile", "1"), Phone("business", "2")))
    a = map_contact(c, record_key="contact:1")
    assert content_hash(a) == content_hash(map_contact(c, record_key="contact:1"))
    assert [p.label for p in a.phone_numbers] == ["BusinessPhone", "MobilePhone"]


# ----------------------------------------------------------------------------- common helpers


def test_case_line_format():
    assert (
        case_line("123/26", "Müller ./. Schmidt wegen Forderung")
        == "Az. 123/26 – Müller ./. Schmidt wegen Forderung"
    )
    assert case_line("123/26", "") == "Az. 123/26"
    assert case_line("", "Rubrum") == "Rubrum"


def test_merge_body_keeps_user_notes_below_marker():
    old = compose_body(["alt"]) + "Privat: Kinder Max und Moritz\n😀"
    new = compose_body(["neu"])
    merged = merge_body(new, old)
    assert merged == f"neu\n\n{USER_NOTES_MARKER}\nPrivat: Kinder Max und Moritz\n😀"
    assert split_body(merged) == ("neu\n\n", "Privat: Kinder Max und Moritz\n😀")


def test_merge_body_without_user_part_or_marker():
    new = compose_body(["neu"])
    assert merge_body(new, compose_body(["alt"])) == new
    assert merge_body(new, "user removed the marker") == new
    assert merge_body(new, None) == new


# ----------------------------------------------------------------------------- property


text = st.text(
    st.characters(codec="utf-8") | st.sampled_from(["\x00", "\x07", "\r", "\ud800", "\ufffe", "😀"]),
    max_size=40,
)
contacts = st.builds(
    Contact,
    id=st.just("1"),
    kind=st.sampled_from(["person", "organisation"]),
    salutation=text,
    title=text,
    given_name=text,
    middle_name=text,
    surname=text,
    generation=text,
    company=text,
    department=text,
    job_title=text,
    emails=st.lists(text | st.emails(), max_size=6).map(tuple),
    phones=st.lists(
        st.builds(Phone, kind=st.sampled_from([*PHONE_KINDS, "x", ""]), number=text), max_size=9
    ).map(tuple),
    addresses=st.lists(
        st.builds(
            PostalAddress, kind=st.sampled_from(["business", "home", "other", "x"]), street=text, city=text
        ),
        max_size=5,
    ).map(tuple),
    birthday=st.none() | st.dates(),
    website=text,
    notes=st.text(max_size=300),
    categories=st.lists(text, max_size=4).map(tuple),
)


def _xml_safe(s: str) -> bool:
    return all(
        ch in "\n\t"
        or (0x20 <= ord(ch) < 0x7F or ord(ch) > 0x9F)
        and not 0xD800 <= ord(ch) <= 0xDFFF
        and ch not in "\ufffe\uffff"
        for ch in s
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contacts)
def test_any_contact_maps_or_raises_mapping_error(contact):
    try:
        item = map_contact(contact, record_key="contact:1")
    except MappingError as err:
        assert str(err) == "Kontakt hat weder Namen noch Firma"
        return
    assert item.display_name and item.file_as
    assert len(item.given_name) <= 255 and len(item.surname) <= 255 and len(item.middle_name) <= 255
    assert len(item.email_addresses) <= 3 and all("@" in e.address for e in item.email_addresses)
    assert len({p.label for p in item.phone_numbers}) == len(item.phone_numbers)
    assert item.body.count(USER_NOTES_MARKER) == 1 and item.body.endswith(USER_NOTES_MARKER + "\n")
    for value in (
        item.display_name,
        item.file_as,
        item.given_name,
        item.surname,
        item.company_name,
        item.body,
    ):
        assert _xml_safe(value)
    content_hash(item)  # serialisable
