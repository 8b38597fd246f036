"""One instance of the reference host in its own process, for the multi-host proof (run as a
script, not collected).

It opens the installation's data directory (which another instance has open at the same
time), starts the plugin (worker mode "external": it only enqueues into the PostgreSQL queue
named by ``TSL_EXCHANGE_QUEUE_URL``), prints ``started`` once the plugin's start-up recovery
is idle, waits for ``go`` on stdin, then runs steps ``--start`` .. ``--stop`` of its own
seeded sequence of changes, printing ``step N`` after each, and shuts down cleanly.

A step is either one change of the single-host kill test's mix (``host_child.one_change``:
contact edits, creations and deletions, Exchange-Sync setzen/entfernen from the menu, the
contact's Sync tab, appointments' participants) or an edit of one of a few "hot" records
that both instances edit over and over, so the same records change in quick succession from
both hosts.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from host_child import one_change  # noqa: E402

from tsl_exchange_plugin.plugin import recovery_for  # noqa: E402
from tsl_hostapi.reference import ReferenceHost  # noqa: E402

HOT_CONTACTS = 5
HOT_APPOINTMENTS = 3


def hot_edit(host: ReferenceHost, rng: random.Random, step: int, users: list[str], tag: str) -> None:
    """Edit one of the first few contacts or appointments (both instances list them in the same
    order), so both hosts keep changing the same records."""
    mark = f"s{step}{tag}"
    if rng.random() < 0.7:
        contacts = host.iter_records("contact")[:HOT_CONTACTS]
        if contacts:
            host.save(dataclasses.replace(rng.choice(contacts), notes=mark))
            return
    appointment = rng.choice(host.iter_records("appointment")[:HOT_APPOINTMENTS])
    people = rng.sample(users, rng.randint(0, min(4, len(users))))
    host.save(dataclasses.replace(appointment, subject=f"Termin {mark}", participant_ids=tuple(people)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--tag", required=True, help="this instance's mark, e.g. h0-")
    parser.add_argument("--users", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, default=0)
    parser.add_argument("--hot", type=float, default=0.35, help="share of steps that edit a hot record")
    args = parser.parse_args(argv)
    host = ReferenceHost(args.data)
    host.startup()
    recovery = recovery_for(host)
    if recovery is None or not recovery.wait_idle(120):
        print("recovery did not end", file=sys.stderr, flush=True)
        return 3
    print("started", flush=True)
    if sys.stdin.readline().strip() != "go":
        host.close()
        return 0
    users = [u for u in args.users.split(",") if u]
    for step in range(args.start, args.stop):
        rng = random.Random(f"{args.seed}:{args.tag}:{step}")
        if rng.random() < args.hot:
            hot_edit(host, rng, step, users, args.tag)
        else:
            one_change(host, rng, step, users, args.tag)
        print(f"step {step}", flush=True)
    host.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
