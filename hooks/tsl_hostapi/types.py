"""Frozen dataclasses that cross the host/plugin boundary.

Everything a hook receives or returns is one of these (or a tuple of them), so
that fields can be added later without changing a hook's signature. Records are
snapshots: a plugin may keep them (for example in its queue) and never needs to
call back into the host to understand one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

# --------------------------------------------------------------------------- records

RecordKind = Literal["contact", "case", "appointment", "deadline", "reminder"]
RECORD_KINDS: tuple[str, ...] = ("contact", "case", "appointment", "deadline", "reminder")


@dataclass(frozen=True)
class RecordRef:
    """Which record: its kind and the host's id for it."""

    kind: str
    id: str

    @property
    def key(self) -> str:
        """Stable text key, e.g. ``contact:17``; what the plugin stamps on Exchange items."""
        return f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, key: str) -> RecordRef:
        kind, sep, rid = key.partition(":")
        if not sep or not kind or not rid:
            raise ValueError(f"Ungültiger Datensatzschlüssel: {key!r}")
        return cls(kind, rid)


class _Record:
    """What every record has: a kind and the host's id, hence a ``ref``."""

    KIND: ClassVar[str] = ""
    id: str

    @property
    def ref(self) -> RecordRef:
        return RecordRef(self.KIND, self.id)


@dataclass(frozen=True)
class User:
    """A user of the host (lawyer, clerk, administrator)."""

    id: str
    name: str
    email: str = ""
    active: bool = True
    is_admin: bool = False
    role: str = ""  # "Rechtsanwalt", "Fachangestellte", ... free text from the host


@dataclass(frozen=True)
class Phone:
    """A phone number. ``kind`` is one of PHONE_KINDS."""

    kind: str
    number: str


PHONE_KINDS: tuple[str, ...] = (
    "business",
    "business2",
    "mobile",
    "home",
    "business_fax",
    "home_fax",
    "other",
)


@dataclass(frozen=True)
class PostalAddress:
    """A postal address. ``kind`` is "business", "home" or "other"."""

    kind: str
    street: str = ""
    postal_code: str = ""
    city: str = ""
    state: str = ""
    country: str = ""


@dataclass(frozen=True)
class Contact(_Record):
    """A person or an organisation in the host's address book (Adressen)."""

    KIND: ClassVar[str] = "contact"

    id: str
    kind: Literal["person", "organisation"] = "person"
    salutation: str = ""  # "Herr", "Frau", "" ; shown in German order before the title
    title: str = ""  # "Dr.", "Prof. Dr."
    given_name: str = ""
    middle_name: str = ""
    surname: str = ""
    generation: str = ""  # "jun.", "sen."
    company: str = ""
    department: str = ""
    job_title: str = ""
    emails: tuple[str, ...] = ()
    phones: tuple[Phone, ...] = ()
    addresses: tuple[PostalAddress, ...] = ()
    birthday: dt.date | None = None
    website: str = ""
    notes: str = ""
    categories: tuple[str, ...] = ()
    modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Case(_Record):
    """A case file (Akte)."""

    KIND: ClassVar[str] = "case"

    id: str
    file_number: str  # Aktenzeichen, e.g. "123/26"
    rubrum: str  # "Müller ./. Schmidt wegen Forderung"
    lawyer_id: str = ""  # responsible lawyer (Sachbearbeiter)
    clerk_id: str = ""
    client_contact_id: str = ""
    opponent_contact_id: str = ""
    modified_at: dt.datetime | None = None


Frequency = Literal["daily", "weekly", "monthly", "yearly"]
FREQUENCIES: tuple[str, ...] = ("daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class OccurrenceChange:
    """One occurrence of a series that differs from the pattern (host API 1.2).

    ``original_date`` names the occurrence: the date it has by the pattern, in the series'
    zone. ``cancelled`` drops it. Otherwise the fields given replace the series' values for
    that occurrence only: ``start``/``end`` (naive wall-clock in the appointment's zone) for a
    timed series, ``start_date``/``end_date`` (inclusive) for an all-day series; an empty
    ``subject`` or ``location`` keeps the series' one.
    """

    original_date: dt.date
    cancelled: bool = False
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    subject: str = ""
    location: str = ""


@dataclass(frozen=True)
class Recurrence:
    """How an appointment repeats (host API 1.2). The first occurrence is the appointment's own
    start (or start date); every occurrence has the same time of day and length.

    - ``frequency`` "daily": every ``interval`` days.
    - "weekly": every ``interval`` weeks (weeks begin on Monday) on ``weekdays``
      (0 = Monday … 6 = Sunday); empty means the start's weekday.
    - "monthly": every ``interval`` months on ``day_of_month`` (a day beyond the month's end
      means its last day), or, with ``week_of_month`` (1-4, 5 = last), on that weekday
      (``weekdays[0]``) of the month. Neither given: the start's day of month.
    - "yearly": every ``interval`` years in ``month`` (default: the start's month), on
      ``day_of_month`` or on the ``week_of_month``-th weekday as for "monthly".

    End: ``count`` occurrences, or up to and including ``until``, or neither (no end).
    ``exceptions``: single occurrences moved, changed or cancelled.
    """

    frequency: Frequency
    interval: int = 1
    weekdays: tuple[int, ...] = ()
    day_of_month: int | None = None
    week_of_month: int | None = None
    month: int | None = None
    count: int | None = None
    until: dt.date | None = None
    exceptions: tuple[OccurrenceChange, ...] = ()


@dataclass(frozen=True)
class Appointment(_Record):
    """A Termin: a time span in a time zone, or all-day (then only the dates count)."""

    KIND: ClassVar[str] = "appointment"

    id: str
    subject: str
    start: dt.datetime | None = None  # naive wall-clock time in ``timezone``
    end: dt.datetime | None = None
    all_day: bool = False
    start_date: dt.date | None = None  # for all-day appointments
    end_date: dt.date | None = None  # inclusive
    timezone: str = "Europe/Berlin"
    location: str = ""
    participant_ids: tuple[str, ...] = ()
    case_id: str = ""
    appointment_type: str = ""  # "Gerichtstermin", "Besprechung", ...
    busy: bool = True
    reminder_minutes: int | None = None
    notes: str = ""
    modified_at: dt.datetime | None = None
    recurrence: Recurrence | None = None  # host API 1.2: a series (Serientermin); None: a single Termin


@dataclass(frozen=True)
class Deadline(_Record):
    """A Frist with its Vorfristen. The host computed every date; the plugin never recomputes one."""

    KIND: ClassVar[str] = "deadline"

    id: str
    due_date: dt.date | None
    kind: str = ""  # "Berufungsfrist", "Berufungsbegründungsfrist", ...
    pre_deadline_dates: tuple[dt.date, ...] = ()
    responsible_ids: tuple[str, ...] = ()
    case_id: str = ""
    done: bool = False
    notes: str = ""
    modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Reminder(_Record):
    """A Wiedervorlage: take a file up again on a date."""

    KIND: ClassVar[str] = "reminder"

    id: str
    due_date: dt.date | None
    subject: str = ""
    responsible_ids: tuple[str, ...] = ()
    case_id: str = ""
    done: bool = False
    notes: str = ""
    modified_at: dt.datetime | None = None


Record = Contact | Case | Appointment | Deadline | Reminder


@dataclass(frozen=True)
class RecordEvent:
    """What ``tsl_record_saved`` / ``tsl_record_deleted`` receive.

    ``record`` is the committed state for a save and the last state for a delete
    (may be None if the host no longer has it). ``user`` is who made the change.
    ``version`` (host API 1.1) is the record's revision after this change: an integer
    the host raises in the same transaction on every save and delete of that record,
    so it is strictly increasing per record, deletes included. Hooks may run in another
    order than the commits; the version lets a plugin keep the newest state. None when
    the host does not number revisions (plugins then fall back to ``modified_at``).
    """

    ref: RecordRef
    record: Record | None
    user: User | None = None
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    version: int | None = None


# --------------------------------------------------------------------------- licence


@dataclass(frozen=True)
class Licence:
    """The licence document the host holds for a plugin, as text plus what it claims."""

    plugin_id: str
    document: str = ""  # the signed licence as the vendor issued it (opaque to the host)


@dataclass(frozen=True)
class LicenceDecision:
    """A plugin's verdict on its own licence."""

    allowed: bool
    reason: str = ""  # German, shown greyed out under the Interfaces entry when not allowed
    seats: int | None = None
    expires: dt.date | None = None


# --------------------------------------------------------------------------- settings UI

SettingsScope = Literal["interfaces", "user", "contact"]
FieldType = Literal["text", "password", "checkbox", "select", "user_list", "number", "status", "table"]


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class SettingsField:
    """One input in a settings tab. Labels are German, as the host shows them."""

    name: str
    label: str
    type: FieldType = "text"
    required: bool = False
    help: str = ""
    choices: tuple[Choice, ...] = ()
    read_only: bool = False


@dataclass(frozen=True)
class SettingsButton:
    """A button on a tab; pressing it calls ``tsl_run_action`` with ``action_id``."""

    action_id: str
    label: str


@dataclass(frozen=True)
class SettingsTab:
    """A declarative tab the host renders in one of its dialogs."""

    plugin_id: str
    tab_id: str
    title: str
    scope: str
    fields: tuple[SettingsField, ...] = ()
    buttons: tuple[SettingsButton, ...] = ()
    enabled: bool = True
    disabled_reason: str = ""


@dataclass(frozen=True)
class SettingsContext:
    """Which object a settings tab is about: the firm (interfaces), a user, or a contact."""

    scope: str
    object_id: str = ""  # user id for scope "user", contact id for scope "contact"


@dataclass(frozen=True)
class SettingsValues:
    """What ``tsl_settings_load`` returns: field name -> value (never a stored password)."""

    values: dict[str, Any] = field(default_factory=dict)
    status: str = ""


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True)
class SaveResult:
    """What ``tsl_settings_save`` returns."""

    ok: bool
    errors: tuple[FieldError, ...] = ()
    message: str = ""


# --------------------------------------------------------------------------- menus and actions


@dataclass(frozen=True)
class MenuAction:
    """A plain-data menu item, e.g. Tools › Modify Selected › Set Exchange Sync."""

    plugin_id: str
    action_id: str
    label: str
    menu_path: tuple[str, ...] = ()  # ("Extras", "Auswahl ändern")
    view: str = ""  # "contacts", ...
    needs_selection: bool = True
    asks: tuple[SettingsField, ...] = ()  # what the host asks before running it


@dataclass(frozen=True)
class RecordOutcome:
    ref: RecordRef
    status: Literal["done", "unchanged", "failed"]
    message: str = ""


@dataclass(frozen=True)
class ActionResult:
    """What the host shows after a menu action or a tab button."""

    ok: bool
    message: str = ""
    outcomes: tuple[RecordOutcome, ...] = ()
    status_icon: Literal["", "green", "red", "grey"] = ""


# --------------------------------------------------------------------------- the host protocol


@runtime_checkable
class SettingsStore(Protocol):
    """The host's settings store, namespaced per plugin. Values are JSON-serialisable."""

    def get(self, namespace: str, key: str, default: Any = None) -> Any: ...

    def set(self, namespace: str, key: str, value: Any) -> None: ...

    def delete(self, namespace: str, key: str) -> None: ...

    def keys(self, namespace: str, prefix: str = "") -> list[str]: ...

    def set_many(self, namespace: str, values: dict[str, Any]) -> None:
        """Set several keys in one transaction (a value of None deletes the key)."""
        ...


@runtime_checkable
class Host(Protocol):
    """What the host offers a plugin. The plugin never reaches into the host's database."""

    api_version: str

    def get_record(self, ref: RecordRef) -> Record | None: ...

    def iter_records(self, kind: str) -> list[Record]: ...

    def get_user(self, user_id: str) -> User | None: ...

    def list_users(self) -> list[User]: ...

    def data_dir(self, plugin_id: str) -> str: ...

    @property
    def settings(self) -> SettingsStore: ...

    def licence(self, plugin_id: str) -> Licence | None: ...

    def notify(self, message: str, *, user_id: str | None = None, level: str = "info") -> None: ...

    def plugin_state(self, plugin_id: str) -> dict[str, Any]:
        """A dict the host keeps for ``plugin_id`` while this host lives (host API 1.3).

        A plugin module is imported once per process and registered once per plugin manager,
        so it cannot tell hosts apart by itself; the hook's ``host`` argument may be a new
        object on every call (an adapter of the real host). The plugin keeps its in-memory
        objects for this host here (its runtime, its threads). The same dict is returned for
        the same plugin id on every call, for every object that stands for this host; it
        starts empty, the host never reads it, and it is not stored anywhere."""
        ...
