"""A stateful property test of the whole sync: host edits, phone edits, faults, disable/enable.

Rules drive the reference host (through the real pluggy manager), the phone (the sandbox's
inspection API) and the server (its fault plan); after each step the queue is drained and a
reconcile sweep run, and then every mailbox must equal the host's view item by item, with no
duplicate keys, nothing raised into the host, and a clean deadline parity report.

CI runs a few bounded examples. A long run: ``TSL_STATE_MACHINE=long .venv/bin/python -m pytest
tests/integration/test_sync_state_machine.py -q`` (see README).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tsl_exchange_plugin import PLUGIN_ID, licence
from tsl_exchange_plugin.cli.demo import sandbox_tab_values
from tsl_exchange_plugin.core import subscriptions
from tsl_exchange_plugin.core.parity import stored as stored_parity
from tsl_exchange_plugin.plugin import runtime_for
from tsl_exchange_plugin.sandbox.server import SandboxServer
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS, _close_exchangelib
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.reference.sample_firm import generate_firm
from tsl_hostapi.types import SettingsContext

LONG = os.environ.get("TSL_STATE_MACHINE") == "long"
# The long run takes about half an hour; the suite's per-test time limit is for the short one.
pytestmark = pytest.mark.timeout(0 if LONG else 240)
FOLDERS = {"contact": "contacts", "calendar": "calendar", "task": "tasks"}
USER_TAB = f"{PLUGIN_ID}.user"


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="tsl-sm-"))
        key = Ed25519PrivateKey.generate()
        self._env = {name: os.environ.get(name) for name in (licence.TRUSTED_KEYS_ENV, licence.DEV_KEYS_ENV)}
        os.environ[licence.DEV_KEYS_ENV] = "1"  # a test key counts only behind this switch
        os.environ[licence.TRUSTED_KEYS_ENV] = f"test={licence.public_key_b64(key)}"
        claims = licence.LicenceClaims(
            "Kanzlei Test", (licence.MODULE,), 10, dt.date.today() + dt.timedelta(days=30)
        )
        self.server = SandboxServer(self.tmp / "ews", mailboxes=dict(SANDBOX_PASSWORDS)).start()
        self.firm = generate_firm(seed=11, contacts=12, cases=6, appointments=4)
        self.host = ReferenceHost(self.tmp / "host")
        self.host.load_firm(self.firm)
        self.host.startup()
        self.host.install_licence(PLUGIN_ID, licence.sign(claims, key, "test"))
        assert self.host.enable(PLUGIN_ID).allowed
        self.admin = next(u for u in self.firm.users if u.is_admin)
        self.lawyers = [u for u in self.firm.users if u.role.startswith("Rechtsanw")][:2]
        emails = sorted(SANDBOX_PASSWORDS)
        self.mailbox_of = {u.id: e for u, e in zip(self.lawyers, emails, strict=False)}
        self.runtime.admin.save_firm_settings(
            {"reconcile_auto": False, "reconcile_time": "", "request_timeout": 2, "phone_edits": "restore"}
        )
        for user in self.lawyers:
            email = self.mailbox_of[user.id]
            values = sandbox_tab_values(self.server.url, email, SANDBOX_PASSWORDS[email])
            ok = self.host.save_tab(self.admin, "user", USER_TAB, SettingsContext("user", user.id), values)
            assert ok.ok, ok
        self.enabled = True
        self.settle()

    @property
    def runtime(self):
        runtime = runtime_for(self.host)
        assert runtime is not None
        return runtime

    def teardown(self) -> None:
        try:
            self.host.close()
        finally:
            _close_exchangelib()
            self.server.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
            for name, value in self._env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # ------------------------------------------------------------------ helpers
    def drain(self, timeout: float = 120.0) -> None:
        """Wait for the plugin's own worker threads to empty the queue (a state, polled)."""
        deadline = time.monotonic() + timeout
        while self.runtime.outbox.pending_count() > 0:
            assert time.monotonic() < deadline, self.runtime.outbox.jobs()[:3]
            self.runtime.worker.wake()
            time.sleep(0.05)

    def settle(self) -> None:
        """Drain, sweep (repairs), drain; then a second sweep must find nothing left to repair."""
        self.server.faults.clear()
        self.drain()
        self.runtime.reconciler.sweep()
        self.drain()
        again = self.runtime.reconciler.sweep()
        assert all(r.outcome == "done" and not r.findings for r in again), [r.findings for r in again]

    def _ours(self, user, folder):
        items = self.server.engine.list_items(self.mailbox_of[user.id], folder)
        return [i for i in items if (i.get("extended_properties") or {}).get("tslRecordId")]

    # ------------------------------------------------------------------ host rules
    @precondition(lambda self: self.enabled)
    @rule(n=st.integers(0, 11), who=st.sets(st.integers(0, 1)), note=st.text("abc xyz", max_size=8))
    def subscribe_and_edit_contact(self, n, who, note):
        contact = self.host.iter_records("contact")[n]
        users = [self.lawyers[i].id for i in who]
        current = set(subscriptions.subscribers(self.host.settings, contact.id))
        self.runtime.subscriptions.change(
            [contact.id], add=users, remove=[u for u in current if u not in users]
        )
        self.host.save(dataclasses.replace(contact, notes=note))

    @rule(n=st.integers(0, 20), days=st.integers(-3, 3), times=st.integers(1, 4))
    def save_deadline_rapidly(self, n, days, times):
        deadlines = self.host.iter_records("deadline")
        if not deadlines:
            return
        d = deadlines[n % len(deadlines)]
        for k in range(times):
            if d.due_date:
                d = dataclasses.replace(d, due_date=d.due_date + dt.timedelta(days=days + k))
            self.host.save(d)

    @rule(n=st.integers(0, 20), done=st.booleans(), who=st.sets(st.integers(0, 1), min_size=1))
    def reassign_deadline(self, n, done, who):
        deadlines = self.host.iter_records("deadline")
        if deadlines:
            d = deadlines[n % len(deadlines)]
            self.host.save(
                dataclasses.replace(d, done=done, responsible_ids=tuple(self.lawyers[i].id for i in who))
            )

    @rule(n=st.integers(0, 20), kind=st.sampled_from(["deadline", "reminder", "appointment"]))
    def delete_record(self, n, kind):
        records = self.host.iter_records(kind)
        if len(records) > 1:
            self.host.delete(records[n % len(records)].ref)

    @rule(n=st.integers(0, 5), suffix=st.text("ÄÖÜß ./", min_size=1, max_size=4))
    def rename_case(self, n, suffix):
        cases = self.host.iter_records("case")
        case = cases[n % len(cases)]
        self.host.save(dataclasses.replace(case, rubrum=case.rubrum[:40] + suffix))

    # ------------------------------------------------------------------ phone rules
    @rule(u=st.integers(0, 1), n=st.integers(0, 50), folder=st.sampled_from(sorted(FOLDERS.values())))
    def phone_edit(self, u, n, folder):
        user = self.lawyers[u]
        items = self._ours(user, folder)
        if items:
            item = items[n % len(items)]
            field = "display_name" if folder == "contacts" else "subject"
            self.server.engine.phone_edit(self.mailbox_of[user.id], item["item_id"], **{field: "am Telefon"})

    @rule(u=st.integers(0, 1), n=st.integers(0, 50), folder=st.sampled_from(sorted(FOLDERS.values())))
    def phone_delete(self, u, n, folder):
        user = self.lawyers[u]
        items = self._ours(user, folder)
        if items:
            self.server.engine.phone_delete(self.mailbox_of[user.id], items[n % len(items)]["item_id"])

    # ------------------------------------------------------------------ server faults
    @rule(op=st.sampled_from(["CreateItem", "UpdateItem", "FindItem", "DeleteItem"]))
    def server_busy(self, op):
        self.server.inject("server_busy", operation=op, back_off_ms=50)

    @precondition(lambda self: LONG)
    @rule()
    def timeout_after_commit(self):
        self.server.inject("commit_then_hang", operation="CreateItem", seconds=3)

    @rule(op=st.sampled_from(["CreateItem", "UpdateItem"]))
    def dropped_connection(self, op):
        self.server.inject("drop_connection", operation=op)

    # ------------------------------------------------------------------ workers
    @precondition(lambda self: self.enabled)
    @rule()
    def worker_died_holding_a_claim(self):
        """A worker process took a mailbox's jobs and died before it acknowledged anything; its
        lease has run out (taken here with no time left on it), so another worker takes over and
        must treat every create of those jobs as possibly written."""
        self.runtime.outbox.claim("verstorbener-worker", limit=50, lease_seconds=0.0)

    # ------------------------------------------------------------------ plugin lifecycle
    @precondition(lambda self: self.enabled)
    @rule()
    def disable(self):
        self.host.disable(PLUGIN_ID)
        self.enabled = False

    @precondition(lambda self: not self.enabled)
    @rule()
    def enable(self):
        assert self.host.enable(PLUGIN_ID).allowed
        self.enabled = True

    # ------------------------------------------------------------------ the invariant
    @invariant()
    def mailboxes_equal_the_host(self):
        if not self.enabled:
            return
        self.settle()
        errors = [n for n in self.host.notifications if n.level == "error"]
        assert not errors, errors  # nothing raised into the host
        for user in self.lawyers:
            expected, unmappable = self.runtime.reconciler.expected_view(user.id)
            # A record the host holds with invalid data fails in the queue with its reason and
            # keeps what its mailbox showed before; everything else must match exactly.
            failed = {j.record_key for j in self.runtime.outbox.jobs(user.id, status="failed")}
            assert failed <= unmappable, (failed, unmappable)
            for item_class, folder in FOLDERS.items():
                items = self._ours(user, folder)
                keys = [i["extended_properties"]["tslRecordId"] for i in items]
                assert len(keys) == len(set(keys)), f"duplicate keys in {folder} of {user.name}"
                keys = [k for k in keys if k.split("#", 1)[0] not in unmappable]
                want = {k: e.item for k, e in expected.items() if e.item.item_class == item_class}
                assert set(keys) == set(want), (folder, user.name, set(keys) ^ set(want))
                for item in items:
                    if item["extended_properties"]["tslRecordId"].split("#", 1)[0] in unmappable:
                        continue
                    exp = want[item["extended_properties"]["tslRecordId"]]
                    title = item.get("display_name") if folder == "contacts" else item.get("subject")
                    assert title == (exp.display_name if folder == "contacts" else exp.subject)
        assert stored_parity(self.runtime).clean, stored_parity(self.runtime).diffs


SyncMachine.TestCase.settings = settings(
    max_examples=60 if LONG else 2,
    stateful_step_count=40 if LONG else 8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_sync_state_machine = SyncMachine.TestCase
