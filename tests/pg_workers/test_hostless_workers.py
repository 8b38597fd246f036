"""Worker processes with nothing but the queue URL and the key: no reference host, no data directory.

The host (the reference host of ``pg_kanzlei``, queue on PostgreSQL, worker mode "external")
writes accounts, mapping context, the firm's rules, the hold and the licence into the store;
``tsl-exchange worker --queue URL --key-file F`` runs in a directory of its own with a copy of
the key, as it would on another machine.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from tsl_exchange_plugin.core.firm import QUEUE_URL_ENV
from tsl_exchange_plugin.core.shared_state import WRONG_KEY
from tsl_exchange_plugin.credentials import KEY_ENV, KEY_FILE_ENV, KEY_FILE_NAME
from tsl_exchange_plugin.testing import wait_for
from tsl_hostapi.types import Appointment, Deadline, User

from .test_external_workers import assert_exactly_once, listeners, subscribe

pytestmark = pytest.mark.postgres


class HostlessWorkers:
    """``tsl-exchange worker --queue`` subprocesses in a directory without any host data."""

    def __init__(self, queue_url: str, machine: Path, host_key: Path) -> None:
        self.queue_url = queue_url
        self.machine = machine  # the "other machine": the worker's working directory
        self.machine.mkdir()
        self.key_file = machine / "exchange.key"
        shutil.copy(host_key, self.key_file)
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, key_file: Path | None = None, threads: int = 2) -> subprocess.Popen:
        env = dict(os.environ)  # the trusted licence key stays (it is built into a real plugin)
        for name in (QUEUE_URL_ENV, KEY_ENV, KEY_FILE_ENV):
            env.pop(name, None)
        log_path = self.machine / f"worker-{len(self.procs)}.log"
        command = [sys.executable, "-m", "tsl_exchange_plugin.cli", "worker", "--queue", self.queue_url]
        command += ["--key-file", str(key_file or self.key_file), "--threads", str(threads), "--lease", "5"]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [*command, *args], env=env, cwd=self.machine, stdout=out, stderr=subprocess.STDOUT
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def hostless(pg_kanzlei, pg_queue_url: str, tmp_path: Path) -> Iterator[HostlessWorkers]:
    host_key = Path(pg_kanzlei.runtime.data_dir) / KEY_FILE_NAME
    pool = HostlessWorkers(pg_queue_url, tmp_path / "worker-machine", host_key)
    try:
        yield pool
    finally:
        pool.kill_all()


def drained(k) -> None:
    wait_for(lambda: k.runtime.outbox.pending_count() == 0, timeout=60, what="the queue to drain")


def test_hostless_worker_pushes_contact_appointment_and_deadline_in_the_users_zone(pg_kanzlei, hostless):
    k = pg_kanzlei
    alice = k.lawyers[0]
    zone = "America/New_York"
    k.configure(alice, timezone=zone, deadline_reminder_minutes=600)  # the host publishes the account row
    contact = k.contacts[0]
    day = dt.date(2026, 7, 1)
    appointment = Appointment(
        id="hl-a1",
        subject="Gerichtstermin Müller",
        start=dt.datetime(2026, 7, 1, 9, 0),
        end=dt.datetime(2026, 7, 1, 10, 0),
        timezone="Europe/Berlin",
        participant_ids=(alice.id,),
    )
    deadline = Deadline(id="hl-d1", due_date=day, kind="Berufungsfrist", responsible_ids=(alice.id,))
    subscribe(k, [contact], [alice])
    k.host.save_many([appointment, deadline])
    assert k.runtime.outbox.pending_count(alice.id) > 0
    proc = hostless.start()
    drained(k)
    assert k.runtime.outbox.jobs(status="failed") == [], hostless.output(proc)
    assert len(k.ours(alice, contact.ref.key)) == 1
    (appt,) = k.ours(alice, appointment.ref.key, "calendar")
    # The appointment keeps its own zone (09:00 in Berlin is 07:00 UTC in July) ...
    assert appt["start"] == "2026-07-01T07:00:00Z"
    (frist,) = k.ours(alice, deadline.ref.key, "calendar")
    # ... the all-day deadline lies on its day in Alice's zone, with her own lead time.
    midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(dt.UTC)
    assert frist["start"] == midnight.strftime("%Y-%m-%dT%H:%M:%SZ"), frist
    assert frist["reminder_minutes_before_start"] == "600"
    assert "Berufungsfrist" in frist["subject"]
    assert proc.poll() is None, hostless.output(proc)


@pytest.mark.parametrize("mode", ["queue", "data"])
def test_the_hold_written_by_the_host_stops_an_external_worker(pg_kanzlei, hostless, workers, mode):
    k = pg_kanzlei
    alice = k.lawyers[0]
    if mode == "queue":
        proc = hostless.start(threads=1)
        output = hostless.output
    else:  # the worker on the host's machine (--data) reads the same hold
        proc = workers.start(threads=1)
        output = workers.output
    wait_for(lambda: listeners(k) == 1, timeout=30, what="the worker to listen")
    # The administrator's cleanup before disabling holds every push, in the host process.
    k.runtime.admin.hold("Aufräumen läuft.")
    subscribe(k, k.contacts[:5], [alice])  # NOTIFY wakes the worker; its gate reads the hold

    def pushed() -> bool:
        return any(k.ours(alice, c.ref.key) for c in k.contacts[:5])

    # Whichever comes first: the worker says it holds, or a contact arrives despite the hold.
    wait_for(
        lambda: "Angehalten: Aufräumen läuft." in output(proc) or pushed(),
        timeout=30,
        what="the worker to hold (or push)",
    )
    assert not pushed(), "the worker pushed while the administrator held all pushing"
    assert k.runtime.outbox.pending_count(alice.id) == 5
    k.runtime.admin.release_hold()
    drained(k)
    assert all(len(k.ours(alice, c.ref.key)) == 1 for c in k.contacts[:5])
    assert "Übertragung läuft wieder." in output(proc)


def test_missing_or_wrong_key(pg_kanzlei, hostless, tmp_path: Path):
    k = pg_kanzlei
    alice = k.lawyers[0]
    missing = hostless.start(key_file=tmp_path / "nirgends.key")
    assert missing.wait(30) == 2
    assert "Schlüsseldatei" in hostless.output(missing) and "--key-file" in hostless.output(missing)
    garbage = tmp_path / "kaputt.key"
    garbage.write_text("kein-schluessel\n")
    broken = hostless.start(key_file=garbage)
    assert broken.wait(30) == 2
    assert "kein gültiger Schlüssel" in hostless.output(broken)

    from cryptography.fernet import Fernet

    other = tmp_path / "anderer.key"
    other.write_bytes(Fernet.generate_key() + b"\n")
    subscribe(k, k.contacts[:3], [alice])
    wrong = hostless.start(key_file=other)
    parked = wait_for(
        lambda: next(
            (s for s in k.runtime.outbox.mailbox_states() if s.mailbox == alice.id and s.parked), None
        ),
        timeout=30,
        what="alice's mailbox to be parked",
    )
    assert parked.parked_reason.startswith(WRONG_KEY)
    assert wrong.poll() is None  # parked, not crashed
    wrong.send_signal(signal.SIGTERM)
    assert wrong.wait(30) == 0
    right = hostless.start()  # with the host's key: it frees the mailbox and pushes
    drained(k)
    assert all(len(k.ours(alice, c.ref.key)) == 1 for c in k.contacts[:3])
    assert "wieder freigegeben" in hostless.output(right)


LIMIT = 3
EXTRA_MAILBOXES = {f"anwalt{n}@kanzlei.test": f"Anwalt-Sandbox-{n}!" for n in range(6)}


def test_four_worker_processes_never_exceed_the_per_server_limit(pg_kanzlei, hostless):
    k = pg_kanzlei
    users = list(k.lawyers)
    for n, (email, password) in enumerate(EXTRA_MAILBOXES.items()):
        user = k.host.save_user(User(id=f"hl-u{n}", name=f"Anwalt {n}", email=email, role="Rechtsanwalt"))
        k.server.add_mailbox(email, password)
        k.mailbox_of[user.id] = email
        k.configure(user, password=password)
        users.append(user)
    k.lawyers = users  # assert_exactly_once checks every one of them
    # Requests overlap: each takes 200 ms at the server, and twelve worker threads in four
    # processes could have nine mailboxes' requests out at once.
    k.server.inject("delay", seconds=0.2, count=None)
    procs = [hostless.start("--per-server", str(LIMIT), threads=3) for _ in range(4)]
    wait_for(lambda: listeners(k) == 4, timeout=60, what="four workers to listen")
    k.server.reset_peak_in_flight()
    contacts = k.contacts
    subscribe(k, contacts, users)
    drained(k)
    assert k.runtime.outbox.jobs(status="failed") == []
    assert_exactly_once(k, contacts)
    peak = k.server.stats()["peak_in_flight"]
    print(f"peak requests in flight at the sandbox: {peak} (limit {LIMIT})")
    assert peak <= LIMIT, f"{peak} requests at once to one server (limit {LIMIT})"
    assert peak >= 2, "the worker processes never sent side by side"
    for proc in procs:
        assert proc.poll() is None, hostless.output(proc)
