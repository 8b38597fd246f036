"""A reference host in its own process, for the crash tests (run as a script, not collected).

``--mode kill-after-subscribe``: press "Exchange-Sync setzen" for one contact and user, with
the subscription write wrapped so that this process SIGKILLs itself right after the host's
settings committed and before anything was queued: the window a crash can hit.

``--mode changes``: steps ``--start`` .. ``--stop`` of a seeded random sequence of changes
(contact edits, creations and deletions, bulk Exchange-Sync setzen/entfernen, the Sync tab,
appointment participants), printing ``step N`` after each. The test kills it at random
points and starts it again from the step after the last one printed. With ``--kill-after
host:N`` the process SIGKILLs itself right after the N-th commit of the host's database
(``any:N``: of the host's database or the queue, the worker's commits included): a crash
between two commits is what any crash amounts to, and these points are where a change can
be half done (the host committed, the plugin's part not yet).

Both shorten the worker's lease (``--lease``) so that a restarted host is not kept out of
a mailbox for a minute by the lease its killed predecessor left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import os
import random
import signal
import sys
import threading

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core import recovery, subscriptions
from tsl_exchange_plugin.core.runtime import SyncRuntime
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.ui.settings import CONTACT_TAB
from tsl_exchange_plugin.worker.runner import WorkerConfig
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.reference.db import Database
from tsl_hostapi.types import Contact, RecordRef, SettingsContext

SET_SYNC = f"{PLUGIN_ID}.set_sync"
REMOVE_SYNC = f"{PLUGIN_ID}.remove_sync"


def short_lease(lease: float) -> None:
    recovery.SyncRuntime = functools.partial(SyncRuntime, worker_config=WorkerConfig(lease_seconds=lease))


def kill_after_commits(kind: str, n: int) -> None:
    counter = itertools.count(1)
    lock = threading.Lock()

    def counted(transaction):
        @contextlib.contextmanager
        def wrapper(*args, **kwargs):
            with transaction(*args, **kwargs) as conn:
                yield conn
            with lock:
                if next(counter) == n:
                    os.kill(os.getpid(), signal.SIGKILL)

        return wrapper

    Database.transaction = counted(Database.transaction)
    if kind == "any":
        SQLiteOutbox._write = counted(SQLiteOutbox._write)


def kill_after_subscribe(host: ReferenceHost, contact_id: str, user_id: str) -> None:
    original = subscriptions.write_subscriptions

    def write_then_die(*args, **kwargs):
        original(*args, **kwargs)
        if not kwargs.get("undo"):
            os.kill(os.getpid(), signal.SIGKILL)

    subscriptions.write_subscriptions = write_then_die
    admin = next(u for u in host.list_users() if u.is_admin)
    host.press(admin, SET_SYNC, [RecordRef("contact", contact_id)], {"users": [user_id]})
    raise SystemExit("still alive after the subscription write")


def one_change(host: ReferenceHost, rng: random.Random, step: int, users: list[str], tag: str) -> None:
    admin = next(u for u in host.list_users() if u.is_admin)
    contacts = host.iter_records("contact")
    # The tag ends the mark, so no mark is part of another ("s5k-" is not in "s50k-") and two
    # hosts running the same step numbers write different ones.
    mark = f"s{step}{tag}"
    op = rng.choices(
        ["edit", "set", "remove", "tab", "appointment", "create", "delete"],
        weights=[35, 15, 8, 8, 16, 10, 8],
    )[0]
    if op == "create" or not contacts:
        contact = host.save(Contact(id=f"{tag}{step}", surname=f"Neu {step}", notes=mark))
        if rng.random() < 0.7:
            host.press(admin, SET_SYNC, [contact.ref], {"users": rng.sample(users, rng.randint(1, 2))})
    elif op == "edit":
        contact = rng.choice(contacts)
        host.save(dataclasses.replace(contact, notes=mark))
    elif op in ("set", "remove"):
        chosen = rng.sample(contacts, min(len(contacts), rng.randint(1, 8)))
        action = SET_SYNC if op == "set" else REMOVE_SYNC
        host.press(admin, action, [c.ref for c in chosen], {"users": rng.sample(users, rng.randint(1, 2))})
    elif op == "tab":
        contact = rng.choice(contacts)
        picked = rng.sample(users, rng.randint(0, len(users)))
        host.save_tab(
            admin, "contact", CONTACT_TAB, SettingsContext("contact", contact.id), {"users": picked}
        )
    elif op == "appointment":
        appointment = rng.choice(host.iter_records("appointment"))
        people = rng.sample(users, rng.randint(0, len(users)))
        host.save(dataclasses.replace(appointment, subject=f"Termin {mark}", participant_ids=tuple(people)))
    elif op == "delete":
        host.delete(rng.choice(contacts).ref)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--mode", choices=["kill-after-subscribe", "changes"], required=True)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--contact")
    parser.add_argument("--user")
    parser.add_argument("--users", default="")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, default=0)
    parser.add_argument("--kill-after", default="", help="host:N or any:N")
    args = parser.parse_args(argv)
    short_lease(args.lease)
    if args.kill_after:
        kind, n = args.kill_after.split(":")
        kill_after_commits(kind, int(n))
    host = ReferenceHost(args.data)
    host.startup()
    print("started", flush=True)
    if args.mode == "kill-after-subscribe":
        kill_after_subscribe(host, args.contact, args.user)
    users = [u for u in args.users.split(",") if u]
    for step in range(args.start, args.stop):
        one_change(host, random.Random(f"{args.seed}:{step}"), step, users, f"k{args.seed}-")
        print(f"step {step}", flush=True)
    host.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
