"""Host Contact -> Exchange ContactItem (pure; no exchangelib, no I/O).

Decisions (German conventions, what a phone shows):

- **Persons.** Given name, middle name, surname and generation go to their EWS fields.
  Display name is "Titel Vorname Zweitname Nachname Namenszusatz", e.g. "Dr. Anna Müller".
  File-as is "Nachname, Vorname" (phones and Outlook sort German address books by surname);
  with only one of the two it is that one.
- **Academic title** ("Dr.", "Prof. Dr."). EWS has no writable title on a Contact (it only
  appears inside the read-only CompleteName), and Nickname would be wrong (phones show it
  as "Spitzname"). So the title is part of the display name and is repeated in the body
  header ("Titel: Dr."). ``ContactItem.title`` carries it as data; the backend does not
  write it to a field.
- **Salutation** (Herr/Frau) has no EWS field either: it goes into the body header
  ("Anrede: Frau"), never into the display name (a phone list reads "Dr. Anna Müller",
  not "Frau Dr. Anna Müller").
- **Organisations.** Company name = the company; display name and file-as = the company.
  A person with a company gets company_name too, but display/file-as stay the person's.
  A person without any name but with a company is shown as the company.
  No name and no company at all -> ``MappingError("Kontakt hat weder Namen noch Firma")``.
- **E-mails.** Up to three go to EmailAddress1..3 in the host's order. Duplicates
  (case-insensitive) are dropped. An address without "@", or containing spaces or control
  characters, is never put into an e-mail field (Exchange would reject the whole item and
  a phone would offer to mail it); it is listed in the body with a note. A fourth and
  further valid addresses are listed in the body.
- **Phones.** business -> BusinessPhone, business2 -> BusinessPhone2, mobile -> MobilePhone,
  home -> HomePhone, business_fax -> BusinessFax, home_fax -> HomeFax, other -> OtherTelephone.
  A second business number takes BusinessPhone2 when free (a business2 number takes
  BusinessPhone when free); an unknown kind takes OtherTelephone when free. Everything
  that finds no free slot is listed in the body, nothing is lost.
- **Addresses.** business/home/other -> Business/Home/Other; unknown kinds take Other when
  free; empty addresses are skipped; a second address of a kind is listed in the body.
- **Birthday** passes through as a date (29 February included). **Website** ->
  BusinessHomePage.
- **Values Exchange cannot hold** are kept in the body, as invalid e-mail addresses are: a
  website that is no URI Exchange accepts ("http://www.kanzlei müller.de": the server refuses
  the whole request), a birthday outside the dates a mailbox holds (01.01.0001, 31.12.9999).
  The contact is still pushed: its phone numbers and addresses are what the lawyer relies on,
  and refusing all of it for a broken website would lose them; nothing is changed silently,
  the body says what was not taken over and why.
- **Body.** A header block (Anrede, Titel, Akten, overflow e-mails/phones/addresses),
  a blank line, the host's notes, then the line ``USER_NOTES_MARKER``; the backend keeps
  what the user writes below it.
- **Text.** Control characters are removed (newlines and tabs kept in the notes), umlauts
  and emoji pass unchanged, names are cut to 255 characters (the EWS limit), notes are never cut.
- **Clearing.** Every owned field is always set; an empty string or tuple means "clear it
  in Exchange" (a contact without phones maps to ``phone_numbers=()``).
"""

from __future__ import annotations

from collections.abc import Sequence

from tsl_hostapi.types import Contact, Phone, PostalAddress

from .common import (
    EMAIL_LIMIT,
    EXCHANGE_MAX_DATE,
    EXCHANGE_MIN_DATE,
    NAME_LIMIT,
    PHONE_LIMIT,
    SHORT_TEXT_LIMIT,
    MappingError,
    clean_categories,
    clean_line,
    clean_text,
    compose_body,
    is_valid_website,
    short,
    trim,
)
from .context import german_date
from .items import EMAIL_LABELS, AddressEntry, ContactItem, EmailEntry, PhoneEntry

PHONE_LABELS: dict[str, str] = {
    "business": "BusinessPhone",
    "business2": "BusinessPhone2",
    "mobile": "MobilePhone",
    "home": "HomePhone",
    "business_fax": "BusinessFax",
    "home_fax": "HomeFax",
    "other": "OtherTelephone",
}
# Where a number goes when its own slot is taken (or its kind is unknown), in order.
_PHONE_FALLBACKS: dict[str, tuple[str, ...]] = {
    "business": ("BusinessPhone2",),
    "business2": ("BusinessPhone",),
}
_UNKNOWN_PHONE_FALLBACK = ("OtherTelephone",)

PHONE_KIND_NAMES: dict[str, str] = {
    "business": "Geschäftlich",
    "business2": "Geschäftlich 2",
    "mobile": "Mobil",
    "home": "Privat",
    "business_fax": "Fax geschäftlich",
    "home_fax": "Fax privat",
    "other": "Weitere",
}

ADDRESS_LABELS: dict[str, str] = {"business": "Business", "home": "Home", "other": "Other"}
ADDRESS_KIND_NAMES: dict[str, str] = {"business": "Geschäftlich", "home": "Privat", "other": "Weitere"}

NO_NAME_REASON = "Kontakt hat weder Namen noch Firma"


def is_valid_email(address: str) -> bool:
    """Good enough for an e-mail field: one "@" with text on both sides, no whitespace or controls.

    Exchange itself accepts almost any string; the check protects phones from offering
    to mail "siehe Akte" and keeps obviously broken data visible in the body instead.
    """
    if not address or len(address) > EMAIL_LIMIT:
        return False
    if clean_text(address) != address or any(ch.isspace() for ch in address):
        return False
    local, sep, domain = address.rpartition("@")
    return bool(sep and local and domain and "@" not in domain)


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _names(contact: Contact) -> tuple[str, str, str, str, str]:
    return (
        short(contact.title, NAME_LIMIT),
        short(contact.given_name, NAME_LIMIT),
        short(contact.middle_name, NAME_LIMIT),
        short(contact.surname, NAME_LIMIT),
        short(contact.generation, NAME_LIMIT),
    )


def _emails(contact: Contact) -> tuple[tuple[EmailEntry, ...], list[str]]:
    entries: list[EmailEntry] = []
    notes: list[str] = []
    seen: set[str] = set()
    for raw in contact.emails:
        stripped = (raw or "").strip()
        if not stripped:
            continue
        if not is_valid_email(stripped):
            shown = clean_line(stripped) or "(leer)"
            notes.append(f"Ungültige E-Mail-Adresse (nicht als E-Mail übernommen): {shown}")
            continue
        if stripped.casefold() in seen:
            continue
        seen.add(stripped.casefold())
        if len(entries) < len(EMAIL_LABELS):
            entries.append(EmailEntry(EMAIL_LABELS[len(entries)], stripped))
        else:
            notes.append(f"Weitere E-Mail-Adresse: {stripped}")
    return tuple(entries), notes


def _phones(phones: Sequence[Phone]) -> tuple[tuple[PhoneEntry, ...], list[str]]:
    taken: dict[str, str] = {}
    notes: list[str] = []
    for phone in phones:
        number = short(phone.number, PHONE_LIMIT)
        if not number:
            continue
        own = PHONE_LABELS.get(phone.kind)
        candidates = ((own,) if own else ()) + _PHONE_FALLBACKS.get(phone.kind, ())
        if not own:
            candidates = _UNKNOWN_PHONE_FALLBACK
        label = next((c for c in candidates if c not in taken), None)
        if label is None:
            kind_name = PHONE_KIND_NAMES.get(phone.kind) or short(phone.kind) or "Telefon"
            notes.append(f"Weitere Telefonnummer ({kind_name}): {number}")
        else:
            taken[label] = number
    # Keep a stable order (the order of PHONE_LABELS) so equal contacts hash equal.
    order = list(PHONE_LABELS.values())
    entries = tuple(PhoneEntry(label, taken[label]) for label in order if label in taken)
    return entries, notes


def _address_text(entry: AddressEntry) -> str:
    return ", ".join(
        p for p in (entry.street, _join(entry.zipcode, entry.city), entry.state, entry.country) if p
    )


def _addresses(addresses: Sequence[PostalAddress]) -> tuple[tuple[AddressEntry, ...], list[str]]:
    taken: dict[str, AddressEntry] = {}
    notes: list[str] = []
    for addr in addresses:
        fields = {
            "street": _street(addr.street),
            "zipcode": short(addr.postal_code),
            "city": short(addr.city),
            "state": short(addr.state),
            "country": short(addr.country),
        }
        if not any(fields.values()):
            continue
        label = ADDRESS_LABELS.get(addr.kind, "Other")
        if label in taken:
            kind_name = ADDRESS_KIND_NAMES.get(addr.kind) or short(addr.kind) or "Adresse"
            text = _address_text(AddressEntry(label=label, **fields)).replace("\n", ", ")
            notes.append(f"Weitere Adresse ({kind_name}): {text}")
        else:
            taken[label] = AddressEntry(label=label, **fields)
    order = list(ADDRESS_LABELS.values())
    return tuple(taken[label] for label in order if label in taken), notes


def _street(value: str) -> str:
    """A street may span lines ("c/o ...", "Hauptstr. 1"): keep the lines, drop controls, cut at 255."""
    lines = (" ".join(line.split()) for line in clean_text(value).split("\n"))
    return trim("\n".join(line for line in lines if line), SHORT_TEXT_LIMIT)


def map_contact(contact: Contact, *, record_key: str, case_refs: Sequence[str] = ()) -> ContactItem:
    """Map a host contact to the Exchange contact the plugin owns.

    ``case_refs`` are ready-made case lines (see ``common.case_line``) listed in the body.
    Raises ``MappingError`` (German reason) for a contact that has no name and no company.
    """
    title, given, middle, surname, generation = _names(contact)
    company = short(contact.company)
    person_name = _join(given, middle, surname, generation)

    if contact.kind == "organisation" and company:
        display_name = company
        file_as = company
    elif person_name:
        display_name = _join(title, person_name)
        if surname and given:
            file_as = f"{surname}, {given}"
        else:
            file_as = surname or given or person_name
    elif company:
        display_name = company
        file_as = company
    else:
        raise MappingError(NO_NAME_REASON)
    display_name = short(display_name)
    file_as = short(file_as)

    emails, email_notes = _emails(contact)
    phones, phone_notes = _phones(contact.phones)
    addresses, address_notes = _addresses(contact.addresses)

    header: list[str] = []
    salutation = short(contact.salutation)
    if salutation:
        header.append(f"Anrede: {salutation}")
    if title:
        header.append(f"Titel: {title}")
    cases = [short(c, 1000) for c in case_refs]
    cases = [c for c in cases if c]
    if cases:
        header.append("Akten: " + "; ".join(cases))
    header.extend(email_notes)
    header.extend(phone_notes)
    header.extend(address_notes)
    website = clean_line(contact.website)
    if website and not is_valid_website(website):
        header.append(f"Ungültige Webadresse (nicht als Webseite übernommen): {website}")
        website = ""
    birthday = contact.birthday
    if birthday is not None and not EXCHANGE_MIN_DATE <= birthday <= EXCHANGE_MAX_DATE:
        header.append(
            f"Geburtstag außerhalb der Daten, die Exchange speichert (nicht als Geburtstag übernommen): "
            f"{german_date(birthday)}"
        )
        birthday = None

    body = compose_body(["\n".join(header), clean_text(contact.notes)])

    return ContactItem(
        record_key=record_key,
        display_name=display_name,
        file_as=file_as,
        given_name=given,
        middle_name=middle,
        surname=surname,
        nickname="",
        initials="",
        generation=generation,
        title=title,
        company_name=company,
        department=short(contact.department),
        job_title=short(contact.job_title),
        email_addresses=emails,
        phone_numbers=phones,
        physical_addresses=addresses,
        birthday=birthday,
        business_homepage=website,
        body=body,
        categories=clean_categories(contact.categories),
    )
