"""A deterministic German law firm for tests and the demo.

Everything comes from one seeded ``random.Random`` and a fixed reference date,
so the same arguments always give the same firm. The data is meant to be
awkward where real data is awkward: umlauts and ß, academic titles, companies
with legal forms, several addresses and phone numbers, a birthday on
29 February, postal codes with a leading zero, deadlines moved off weekends and
holidays.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from tsl_hostapi.reference.workdays import next_working_day, previous_working_day
from tsl_hostapi.types import (
    Appointment,
    Case,
    Contact,
    Deadline,
    OccurrenceChange,
    Phone,
    PostalAddress,
    Recurrence,
    Reminder,
    User,
)

DEFAULT_TODAY = dt.date(2026, 3, 2)
"""The fixed "today" of the sample firm (a Monday), so generated dates never drift."""

FIRM_NAME = "Becker & Partner Rechtsanwälte mbB"
FIRM_DOMAIN = "becker-partner.de"


@dataclass(frozen=True)
class Firm:
    name: str
    today: dt.date
    users: tuple[User, ...]
    contacts: tuple[Contact, ...]
    cases: tuple[Case, ...]
    appointments: tuple[Appointment, ...]
    deadlines: tuple[Deadline, ...]
    reminders: tuple[Reminder, ...]

    @property
    def lawyers(self) -> tuple[User, ...]:
        return tuple(u for u in self.users if u.role.startswith("Rechtsanw") and "fach" not in u.role)

    @property
    def clerks(self) -> tuple[User, ...]:
        return tuple(u for u in self.users if "fachangestellte" in u.role)


# --------------------------------------------------------------------------- word lists

_MALE = (
    "Thomas", "Jürgen", "Klaus", "Stefan", "Andreas", "Michael", "Jörg", "Günter", "Uwe", "Matthias",
    "Björn", "Sören", "Maximilian", "Lukas", "Felix", "Hans-Peter", "Karl-Heinz", "Dieter", "Wolfgang",
    "Jan", "Ömer", "Mehmet", "Frank", "Rüdiger",
)  # fmt: skip
_FEMALE = (
    "Sabine", "Claudia", "Birgit", "Jutta", "Käthe", "Hannelore", "Sophie", "Lea", "Marie", "Ursula",
    "Gisela", "Martina", "Anja", "Bärbel", "Dörte", "Renate", "Katrin", "Annegret", "Zoë", "Ayşe",
    "Marie-Luise", "Jana",
)  # fmt: skip
_SURNAMES = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Schulz", "Hoffmann",
    "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz",
    "Zimmermann", "Braun", "Krüger", "Hartmann", "Lange", "Werner", "Krause", "Lehmann", "Köhler",
    "Herrmann", "König", "Walter", "Huber", "Kaiser", "Fuchs", "Möller", "Weiß", "Jung", "Hahn",
    "Vogel", "Günther", "Böhm", "Jäger", "Groß", "Strauß", "Nußbaum", "Rößler", "Spieß", "Kühn",
    "Dietrich", "Yılmaz", "Öztürk", "von der Heide", "Müller-Lüdenscheidt", "Großkopf", "Weißenfels",
    "Zöllner", "Bäumer", "Düring", "Fröhlich",
)  # fmt: skip
_CITIES = (
    ("10115", "Berlin", "Berlin", "30"),
    ("20095", "Hamburg", "Hamburg", "40"),
    ("80331", "München", "Bayern", "89"),
    ("50667", "Köln", "Nordrhein-Westfalen", "221"),
    ("60311", "Frankfurt am Main", "Hessen", "69"),
    ("70173", "Stuttgart", "Baden-Württemberg", "711"),
    ("40213", "Düsseldorf", "Nordrhein-Westfalen", "211"),
    ("04109", "Leipzig", "Sachsen", "341"),
    ("01067", "Dresden", "Sachsen", "351"),
    ("30159", "Hannover", "Niedersachsen", "511"),
    ("90402", "Nürnberg", "Bayern", "911"),
    ("48143", "Münster", "Nordrhein-Westfalen", "251"),
    ("97070", "Würzburg", "Bayern", "931"),
    ("37073", "Göttingen", "Niedersachsen", "551"),
    ("79098", "Freiburg im Breisgau", "Baden-Württemberg", "761"),
    ("24103", "Kiel", "Schleswig-Holstein", "431"),
    ("18055", "Rostock", "Mecklenburg-Vorpommern", "381"),
    ("99084", "Erfurt", "Thüringen", "361"),
    ("06108", "Halle (Saale)", "Sachsen-Anhalt", "345"),
    ("66111", "Saarbrücken", "Saarland", "681"),
    ("55116", "Mainz", "Rheinland-Pfalz", "6131"),
    ("14467", "Potsdam", "Brandenburg", "331"),
    ("82467", "Garmisch-Partenkirchen", "Bayern", "8821"),
)
_STREETS = (
    "Hauptstraße", "Bahnhofstraße", "Schillerstraße", "Goethestraße", "Lindenallee", "Am Mühlbach",
    "Kirchgasse", "Königsallee", "Schloßstraße", "Mühlenweg", "Gartenstraße", "Friedrich-Ebert-Straße",
    "Brückenstraße", "Über den Höfen", "Große Bleichen", "Jungfernstieg", "Domplatz", "Rosenstraße",
    "Weißenburger Straße", "Fußgängerzone", "Straße des 17. Juni",
)  # fmt: skip
_BRANCHES = (
    "Bau", "Immobilien", "Logistik", "Maschinenbau", "Elektrotechnik", "Handels", "Gebäudereinigung",
    "Getränkehandel", "Softwareentwicklung", "Hausverwaltung", "Zahntechnik", "Metallbau", "Brötchen-Service",
)  # fmt: skip
_FORMS = ("GmbH", "AG", "e.K.", "GbR", "GmbH & Co. KG", "UG (haftungsbeschränkt)")
_COURTS = (
    "Amtsgericht München", "Landgericht Köln", "Oberlandesgericht Düsseldorf", "Arbeitsgericht Hamburg",
    "Landgericht Berlin II", "Amtsgericht Nürnberg", "Sozialgericht Leipzig",
)  # fmt: skip
_SUBJECTS = (
    "Forderung", "Kündigungsschutz", "Mietzahlung", "Schadensersatz", "Unterlassung", "Räumung",
    "Werklohn", "Verkehrsunfall", "Zugewinnausgleich", "Kaufpreis", "Gewährleistung", "Schmerzensgeld",
)  # fmt: skip
_DEADLINE_KINDS = (
    ("Berufungsfrist", 30),
    ("Berufungsbegründungsfrist", 60),
    ("Klageerwiderungsfrist", 21),
    ("Einspruchsfrist", 14),
    ("Stellungnahmefrist", 14),
    ("Revisionsfrist", 30),
    ("Replikfrist", 21),
    ("Verjährungsfrist", 90),
)
_REMINDER_SUBJECTS = (
    "Zahlungseingang prüfen", "Sachstandsanfrage an das Gericht", "Rücksprache mit Mandant",
    "Akte zur Vorlage", "Kostenfestsetzung prüfen", "Gutachten angefordert – nachfassen",
    "Vergleichsverhandlungen: Antwort der Gegenseite?", "Zustellung prüfen",
)  # fmt: skip
_NOTES = (
    "Bevorzugt Kontakt per E-Mail.",
    "Nur vormittags erreichbar.",
    "Mandant seit 2015. Rechnungen bitte an die Geschäftsadresse.",
    "Achtung: Namensänderung nach Heirat, früher „Schmitz“.",
    "Schriftverkehr ausschließlich über den Prozessbevollmächtigten.",
    "Zeuge im Verfahren; Ladung über Gericht.",
    "Spricht Türkisch und Deutsch.\nDolmetscher nicht nötig.",
)


def _ascii(text: str) -> str:
    """For e-mail local parts and domains: ä -> ae, ß -> ss, other marks dropped."""
    table = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"}
    out = "".join(table.get(ch, ch) for ch in text)
    out = out.replace("ı", "i").replace("ş", "s").replace("ë", "e")
    return "".join(ch for ch in out.lower() if ch.isascii() and (ch.isalnum() or ch in ".-"))


_LEGAL_WORDS = {"gmbh", "ag", "e.k.", "gbr", "co.", "kg", "ug", "haftungsbeschraenkt", "mbb"}


def _domain(company: str) -> str:
    """``"Weiß & Groß Steuerberatung GbR"`` -> ``"weiss-gross.de"``."""
    parts = [p for p in (_ascii(w) for w in company.split()) if p.strip(".-") and p not in _LEGAL_WORDS]
    return "-".join(parts[:2] or ["firma"]) + ".de"


# --------------------------------------------------------------------------- users


def _users() -> tuple[User, ...]:
    people = (
        ("1", "Dr. Thomas Becker", "t.becker", "Rechtsanwalt", False),
        ("2", "Dr. Julia Weiß", "j.weiss", "Rechtsanwältin", False),
        ("3", "Jörg Hartmann", "j.hartmann", "Rechtsanwalt", False),
        ("4", "Sabine Krüger", "s.krueger", "Rechtsanwältin", False),
        ("5", "Anna Schäfer", "a.schaefer", "Rechtsanwaltsfachangestellte", False),
        ("6", "Lena Groß", "l.gross", "Rechtsanwaltsfachangestellte", False),
        ("7", "Michael Jürgens", "m.juergens", "Rechtsanwaltsfachangestellter", False),
        ("8", "Peter Schulze", "it", "Administrator", True),
    )
    return tuple(
        User(id=i, name=n, email=f"{m}@{FIRM_DOMAIN}", role=r, is_admin=a) for i, n, m, r, a in people
    )


# --------------------------------------------------------------------------- contacts


class _Gen:
    def __init__(self, rng: random.Random, today: dt.date) -> None:
        self.rng = rng
        self.today = today

    def city(self) -> tuple[str, str, str, str]:
        return self.rng.choice(_CITIES)

    def address(self, kind: str, city: tuple[str, str, str, str] | None = None) -> PostalAddress:
        postal_code, name, state, _ = city or self.city()
        number = f"{self.rng.randint(1, 180)}{self.rng.choice(('', '', '', 'a', 'b'))}"
        return PostalAddress(
            kind=kind,
            street=f"{self.rng.choice(_STREETS)} {number}",
            postal_code=postal_code,
            city=name,
            state=state,
            country="Deutschland",
        )

    def landline(self, area: str) -> str:
        return f"+49 {area} {self.rng.randint(100000, 9999999)}"

    def mobile(self) -> str:
        prefix = self.rng.choice(("151", "152", "160", "170", "171", "176", "1575"))
        return f"+49 {prefix} {self.rng.randint(1000000, 99999999)}"

    def birthday(self) -> dt.date:
        year = self.rng.randint(1940, 2004)
        day_of_year = self.rng.randint(0, 364)
        return dt.date(year, 1, 1) + dt.timedelta(days=day_of_year)

    def modified(self) -> dt.datetime:
        minutes = self.rng.randint(0, 60 * 24 * 400)
        base = dt.datetime(self.today.year, self.today.month, self.today.day, 8, 0, tzinfo=dt.UTC)
        return base - dt.timedelta(minutes=minutes)

    def person(self, cid: str, *, female: bool | None = None, title: str | None = None) -> Contact:
        rng = self.rng
        female = rng.random() < 0.5 if female is None else female
        given = rng.choice(_FEMALE if female else _MALE)
        middle = rng.choice(_FEMALE if female else _MALE) if rng.random() < 0.1 else ""
        surname = rng.choice(_SURNAMES)
        if title is None:
            r = rng.random()
            title = "Prof. Dr." if r < 0.04 else "Dr." if r < 0.16 else ""
        salutation = "" if rng.random() < 0.03 else ("Frau" if female else "Herr")
        home_city = self.city()
        addresses = [self.address("home", home_city)]
        phones = [Phone("home", self.landline(home_city[3]))] if rng.random() < 0.7 else []
        company = department = job_title = ""
        if rng.random() < 0.35:
            company = f"{rng.choice(_SURNAMES)} {rng.choice(_BRANCHES)} {rng.choice(_FORMS)}"
            job_title = rng.choice(
                (
                    "Geschäftsführer" if not female else "Geschäftsführerin",
                    "Prokurist",
                    "Leitung Einkauf",
                    "Justiziarin",
                )
            )
            department = rng.choice(("", "Rechtsabteilung", "Buchhaltung", "Vertrieb"))
            work_city = self.city()
            addresses.append(self.address("business", work_city))
            phones.append(Phone("business", self.landline(work_city[3])))
            if rng.random() < 0.4:
                phones.append(Phone("business_fax", self.landline(work_city[3])))
        if rng.random() < 0.75:
            phones.append(Phone("mobile", self.mobile()))
        if rng.random() < 0.1:
            addresses.append(self.address("other"))
        emails = []
        local = _ascii(f"{given}.{surname}").replace(" ", "")
        for domain in rng.sample(
            ("web.de", "gmx.de", "t-online.de", "posteo.de", "mailbox.org"), k=rng.randint(0, 2)
        ):
            emails.append(f"{local}@{domain}")
        if company:
            emails.append(f"{local}@{_ascii(company.split()[0])}.de")
        return Contact(
            id=cid,
            kind="person",
            salutation=salutation,
            title=title,
            given_name=given,
            middle_name=middle,
            surname=surname,
            generation=rng.choice(("jun.", "sen.")) if rng.random() < 0.02 else "",
            company=company,
            department=department,
            job_title=job_title,
            emails=tuple(emails),
            phones=tuple(phones),
            addresses=tuple(addresses),
            birthday=self.birthday() if rng.random() < 0.4 else None,
            notes=rng.choice(_NOTES) if rng.random() < 0.25 else "",
            categories=tuple(
                rng.sample(("Mandant", "Gegner", "Zeuge", "Sachverständiger"), k=rng.randint(0, 2))
            ),
            modified_at=self.modified(),
        )

    def organisation(self, cid: str, *, name: str | None = None, form: str | None = None) -> Contact:
        rng = self.rng
        if name is None:
            form = form or rng.choice(_FORMS)
            style = rng.random()
            if style < 0.4:
                name = f"{rng.choice(_SURNAMES)} {rng.choice(_BRANCHES)} {form}"
            elif style < 0.7:
                name = f"{rng.choice(_SURNAMES)} & {rng.choice(_SURNAMES)} {form}"
            else:
                name = f"{rng.choice(_BRANCHES)} {self.city()[1]} {form}"
        main = self.city()
        addresses = [self.address("business", main)]
        if rng.random() < 0.3:
            addresses.append(self.address("other"))  # Niederlassung
        phones = [Phone("business", self.landline(main[3]))]
        if rng.random() < 0.5:
            phones.append(Phone("business2", self.landline(main[3])))
        if rng.random() < 0.6:
            phones.append(Phone("business_fax", self.landline(main[3])))
        domain = _domain(name)
        return Contact(
            id=cid,
            kind="organisation",
            company=name,
            department=rng.choice(("", "", "Rechtsabteilung", "Schadensabteilung")),
            emails=(f"info@{domain}",) + ((f"buchhaltung@{domain}",) if rng.random() < 0.3 else ()),
            phones=tuple(phones),
            addresses=tuple(addresses),
            website=f"https://www.{domain}",
            notes=rng.choice(_NOTES) if rng.random() < 0.15 else "",
            categories=tuple(rng.sample(("Mandant", "Gegner", "Versicherung"), k=rng.randint(0, 1))),
            modified_at=self.modified(),
        )


def _contacts(gen: _Gen, count: int) -> tuple[Contact, ...]:
    fixed = [
        # Awkward cases every firm has; always present so tests can rely on them.
        Contact(
            id="1",
            kind="person",
            salutation="Herr",
            title="Prof. Dr.",
            given_name="Jürgen",
            surname="Müller-Lüdenscheidt",
            emails=("j.mueller-luedenscheidt@uni-koeln.de", "juergen.ml@web.de"),
            phones=(
                Phone("business", "+49 221 4701234"),
                Phone("mobile", "+49 171 2345678"),
                Phone("home", "+49 221 991122"),
            ),
            addresses=(
                PostalAddress(
                    "business",
                    "Albertus-Magnus-Platz 1",
                    "50923",
                    "Köln",
                    "Nordrhein-Westfalen",
                    "Deutschland",
                ),
                PostalAddress(
                    "home", "Über den Höfen 7", "50667", "Köln", "Nordrhein-Westfalen", "Deutschland"
                ),
            ),
            birthday=dt.date(1956, 2, 29),
            notes="Sachverständiger für Bauschäden.\nTermine nur nach Absprache.",
            categories=("Sachverständiger",),
            modified_at=dt.datetime(2025, 11, 3, 9, 15, tzinfo=dt.UTC),
        ),
        Contact(
            id="2",
            kind="person",
            salutation="Frau",
            title="Dr.",
            given_name="Käthe",
            surname="Weißgerber-Strauß",
            emails=("k.weissgerber@posteo.de",),
            phones=(Phone("mobile", "+49 151 22334455"),),
            addresses=(
                PostalAddress("home", "Schloßstraße 12a", "01067", "Dresden", "Sachsen", "Deutschland"),
            ),
            birthday=dt.date(1972, 12, 31),
            categories=("Mandant",),
            modified_at=dt.datetime(2026, 1, 12, 14, 0, tzinfo=dt.UTC),
        ),
        gen.organisation("3", name="Müller Bau GmbH"),
        gen.organisation("4", name="Schröder Immobilien AG"),
        gen.organisation("5", name="Bäckerei Öztürk e.K."),
        gen.organisation("6", name="Weiß & Groß Steuerberatung GbR"),
    ]
    out = fixed[:count]
    for n in range(len(out) + 1, count + 1):
        cid = str(n)
        out.append(gen.organisation(cid) if gen.rng.random() < 0.25 else gen.person(cid))
    return tuple(out)


# --------------------------------------------------------------------------- cases and calendar


def _cases(
    gen: _Gen, contacts: tuple[Contact, ...], lawyers: list[User], clerks: list[User], count: int
) -> tuple[Case, ...]:
    rng = gen.rng
    yy = gen.today.year % 100
    cases = []
    numbers = rng.sample(range(1, 400), k=count) if count <= 399 else list(range(1, count + 1))
    for i in range(count):
        client, opponent = rng.sample(contacts, k=2) if len(contacts) >= 2 else (contacts[0], contacts[0])

        def short(c: Contact) -> str:
            return c.company if c.kind == "organisation" else c.surname

        year = (yy - rng.choice((0, 0, 0, 1, 2))) % 100
        cases.append(
            Case(
                id=str(i + 1),
                file_number=f"{numbers[i]}/{year:02d}",
                rubrum=f"{short(client)} ./. {short(opponent)} wegen {rng.choice(_SUBJECTS)}",
                lawyer_id=rng.choice(lawyers).id,
                clerk_id=rng.choice(clerks).id,
                client_contact_id=client.id,
                opponent_contact_id=opponent.id,
                modified_at=gen.modified(),
            )
        )
    return tuple(cases)


def _workday_near(gen: _Gen, lo: int, hi: int) -> dt.date:
    return next_working_day(gen.today + dt.timedelta(days=gen.rng.randint(lo, hi)))


def _appointments(
    gen: _Gen, cases: tuple[Case, ...], lawyers: list[User], clerks: list[User], count: int
) -> tuple[Appointment, ...]:
    rng = gen.rng
    out = []
    for i in range(count):
        case = rng.choice(cases) if cases else None
        day = _workday_near(gen, -10, 60)
        if i % 9 == 8:  # now and then an all-day event (training, holiday of the office)
            out.append(
                Appointment(
                    id=str(i + 1),
                    subject=rng.choice(
                        ("Fachanwaltsfortbildung Arbeitsrecht", "Kanzleiausflug", "Deutscher Anwaltstag")
                    ),
                    all_day=True,
                    start_date=day,
                    end_date=day + dt.timedelta(days=rng.randint(0, 2)),
                    location=rng.choice(("Hotel Königshof, Bonn", "Kanzlei", "Estrel Berlin")),
                    participant_ids=tuple(sorted({rng.choice(lawyers).id, rng.choice(lawyers).id})),
                    appointment_type="Fortbildung",
                    busy=True,
                    modified_at=gen.modified(),
                )
            )
            continue
        start = dt.datetime.combine(day, dt.time(rng.randint(8, 16), rng.choice((0, 15, 30, 45))))
        kind = rng.choice(("Gerichtstermin", "Besprechung", "Mandantengespräch"))
        if kind == "Gerichtstermin":
            location = f"{rng.choice(_COURTS)}, Saal {rng.randint(1, 250)}"
            subject = f"Mündliche Verhandlung {case.file_number if case else ''}".strip()
        else:
            location = rng.choice(
                ("Kanzlei, Besprechungsraum 1", "Kanzlei, Besprechungsraum 2", "Telefonkonferenz")
            )
            subject = f"{kind} {case.rubrum}" if case else kind
        participants = {case.lawyer_id} if case else {rng.choice(lawyers).id}
        if rng.random() < 0.4:
            participants.add(case.clerk_id if case else rng.choice(clerks).id)
        out.append(
            Appointment(
                id=str(i + 1),
                subject=subject,
                start=start,
                end=start + dt.timedelta(minutes=rng.choice((30, 45, 60, 90, 120))),
                location=location,
                participant_ids=tuple(sorted(participants)),
                case_id=case.id if case else "",
                appointment_type=kind,
                reminder_minutes=rng.choice((None, 15, 30, 60, 1440)),
                notes="Akte mitnehmen; Originalvollmacht!" if kind == "Gerichtstermin" else "",
                modified_at=gen.modified(),
            )
        )
    return tuple(out)


def _on_or_after(day: dt.date, weekday: int) -> dt.date:
    return day + dt.timedelta(days=(weekday - day.weekday()) % 7)


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> dt.date:
    return _on_or_after(dt.date(year, month, 1), weekday) + dt.timedelta(weeks=nth - 1)


def _series(today: dt.date, lawyers: list[User], clerks: list[User]) -> tuple[Appointment, ...]:
    """Serientermine of every kind, with moved and cancelled occurrences (host API 1.2).

    Deterministic from ``today`` alone (no random numbers are drawn), so asking for them does
    not change any other record of the firm. One series spans both DST switches of the year
    after ``today``; one is all-day (the yearly Fristenkontrolle).
    """
    everyone = tuple(sorted(u.id for u in lawyers))
    monday = _on_or_after(today, 0)
    tuesday = _on_or_after(today, 1)
    month = dt.date(today.year + today.month // 12, today.month % 12 + 1, 1)  # from next month on
    first_wed = [
        _nth_weekday(month.year + (month.month - 1 + i) // 12, (month.month - 1 + i) % 12 + 1, 2, 1)
        for i in range(3)
    ]
    team = Appointment(
        id="S1",
        subject="Kanzleibesprechung",
        start=dt.datetime.combine(monday, dt.time(9)),
        end=dt.datetime.combine(monday, dt.time(10)),
        location="Kanzlei, Besprechungsraum 1",
        participant_ids=everyone,
        appointment_type="Besprechung",
        recurrence=Recurrence(
            "weekly",
            weekdays=(0,),
            exceptions=(
                OccurrenceChange(
                    monday + dt.timedelta(weeks=5),
                    start=dt.datetime.combine(monday + dt.timedelta(weeks=5, days=1), dt.time(9)),
                    end=dt.datetime.combine(monday + dt.timedelta(weeks=5, days=1), dt.time(10)),
                ),
                OccurrenceChange(monday + dt.timedelta(weeks=12), cancelled=True),
            ),
        ),
    )
    office_hours = Appointment(
        id="S2",
        subject="Mandantensprechstunde",
        start=dt.datetime.combine(first_wed[0], dt.time(16)),
        end=dt.datetime.combine(first_wed[0], dt.time(18)),
        location="Kanzlei, Empfang",
        participant_ids=(lawyers[0].id, clerks[0].id),
        appointment_type="Sprechstunde",
        recurrence=Recurrence(
            "monthly",
            week_of_month=1,
            weekdays=(2,),
            count=12,
            exceptions=(OccurrenceChange(first_wed[2], subject="Sprechstunde Erbrecht", location="Raum 2"),),
        ),
    )
    court_day = Appointment(
        id="S3",
        subject="Gerichtstag Amtsgericht",
        start=dt.datetime.combine(tuesday, dt.time(8, 30)),
        end=dt.datetime.combine(tuesday, dt.time(12)),
        location="Amtsgericht, Sitzungssaal 2",
        participant_ids=(lawyers[1].id,),
        appointment_type="Gerichtstermin",
        # Every second Tuesday for more than a year: across both DST switches.
        recurrence=Recurrence(
            "weekly",
            interval=2,
            weekdays=(1,),
            until=tuesday + dt.timedelta(days=400),
            exceptions=(OccurrenceChange(tuesday + dt.timedelta(weeks=4), cancelled=True),),
        ),
    )
    post = Appointment(
        id="S4",
        subject="Posteingang",
        start=dt.datetime.combine(today, dt.time(8)),
        end=dt.datetime.combine(today, dt.time(8, 15)),
        participant_ids=(clerks[0].id,),
        recurrence=Recurrence("daily", count=20),
    )
    control_day = dt.date(today.year, 12, 1)
    control = Appointment(
        id="S5",
        subject="Fristenkontrolle",
        all_day=True,
        start_date=control_day,
        end_date=control_day,
        participant_ids=everyone,
        appointment_type="Fristenkontrolle",
        busy=False,
        recurrence=Recurrence("yearly", until=dt.date(today.year + 4, 12, 31)),
    )
    closing = Appointment(
        id="S6",
        subject="Jahresabschlussbesprechung",
        start=dt.datetime(today.year, 11, 1, 14),
        end=dt.datetime(today.year, 11, 1, 16),
        participant_ids=everyone,
        appointment_type="Besprechung",
        # The last Friday of November, every year, without end.
        recurrence=Recurrence("yearly", month=11, week_of_month=5, weekdays=(4,)),
    )
    return (team, office_hours, court_day, post, control, closing)


def _deadlines(gen: _Gen, cases: tuple[Case, ...], count: int) -> tuple[Deadline, ...]:
    rng = gen.rng
    out = []
    for i in range(count):
        case = rng.choice(cases)
        kind, length = rng.choice(_DEADLINE_KINDS)
        # The raw end of the period, moved to the next working day as § 222 Abs. 2 ZPO demands.
        due = next_working_day(gen.today + dt.timedelta(days=rng.randint(-20, length)))
        pre = sorted(
            {
                previous_working_day(due - dt.timedelta(days=d))
                for d in rng.sample((3, 5, 7, 14), k=rng.randint(1, 2))
            }
        )
        out.append(
            Deadline(
                id=str(i + 1),
                due_date=due,
                kind=kind,
                pre_deadline_dates=tuple(pre),
                responsible_ids=tuple(sorted({case.lawyer_id, case.clerk_id})),
                case_id=case.id,
                done=due < gen.today and rng.random() < 0.8,
                notes=f"{kind} in Sachen {case.rubrum}, Az. {case.file_number}",
                modified_at=gen.modified(),
            )
        )
    return tuple(out)


def _reminders(gen: _Gen, cases: tuple[Case, ...], count: int) -> tuple[Reminder, ...]:
    rng = gen.rng
    out = []
    for i in range(count):
        case = rng.choice(cases)
        due = _workday_near(gen, -7, 45)
        who = rng.choice(
            ((case.lawyer_id,), (case.clerk_id,), tuple(sorted({case.lawyer_id, case.clerk_id})))
        )
        out.append(
            Reminder(
                id=str(i + 1),
                due_date=due,
                subject=f"WV {case.file_number}: {rng.choice(_REMINDER_SUBJECTS)}",
                responsible_ids=who,
                case_id=case.id,
                done=due < gen.today and rng.random() < 0.6,
                modified_at=gen.modified(),
            )
        )
    return tuple(out)


def generate_firm(
    seed: int = 1,
    contacts: int = 300,
    *,
    cases: int = 40,
    appointments: int = 24,
    deadlines: int = 30,
    reminders: int = 20,
    today: dt.date = DEFAULT_TODAY,
    series: bool = False,
) -> Firm:
    """The sample firm: same arguments, same firm. ``today`` anchors every date (the demo may pass the real date).

    ``series``: add the Serientermine (ids ``S1``..``S6``) after the other appointments; off by
    default, so counts other tests rely on stay as they are.
    """
    if contacts < 2:
        raise ValueError("Eine Kanzlei braucht mindestens zwei Kontakte (Mandant und Gegner).")
    rng = random.Random(seed)
    gen = _Gen(rng, today)
    users = _users()
    lawyers = [u for u in users if u.role in ("Rechtsanwalt", "Rechtsanwältin")]
    clerks = [u for u in users if u.role.startswith("Rechtsanwaltsfachangestellte")]
    contact_list = _contacts(gen, contacts)
    case_list = _cases(gen, contact_list, lawyers, clerks, max(cases, 1))
    firm = Firm(
        name=FIRM_NAME,
        today=today,
        users=users,
        contacts=contact_list,
        cases=case_list,
        appointments=_appointments(gen, case_list, lawyers, clerks, appointments)
        + (_series(today, lawyers, clerks) if series else ()),
        deadlines=_deadlines(gen, case_list, deadlines),
        reminders=_reminders(gen, case_list, reminders),
    )
    return firm
