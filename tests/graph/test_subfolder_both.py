"""The firm's named subfolder (Interfaces tab, "Eigener Unterordner") on both backends: contacts,
appointments, deadlines and Wiedervorlagen go to folders of that name, cleanup and the reconcile
sweep look there, and a mailbox moved between EWS and Microsoft Graph finds the same folders and
writes nothing twice."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.sandbox.graph.convert import rest_id
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS
from tsl_exchange_plugin.testing import USER_TAB
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.types import Deadline, Reminder, SettingsContext

INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
SET_SYNC = f"{PLUGIN_ID}.set_sync"
CLEANUP = f"{PLUGIN_ID}.cleanup"
NAME = "timeSensor LEGAL Akten"
CLASSES = {"contact": "IPF.Contact", "calendar": "IPF.Appointment", "task": "IPF.Task"}


def use_subfolder(k) -> None:
    """The administrator chooses the subfolder; it takes effect at the next start of the host."""
    result = k.host.save_tab(
        k.admin,
        "interfaces",
        INTERFACES_TAB,
        SettingsContext("interfaces"),
        {"target": "subfolder", "subfolder": NAME},
    )
    assert result.ok, result
    k.host.close()
    k.host = ReferenceHost(k.host.root)
    k.host.startup()
    k.drain()


def folders_named(k, user, item_class: str) -> list[dict]:
    return [
        f
        for f in k.server.engine.list_folders(k.mailbox_of[user.id])
        if f["name"] == NAME and (f["folder_class"] or "").startswith(CLASSES[item_class])
    ]


def keys_in(k, user, folder_id: str) -> Counter:
    items = k.server.engine.list_items(k.mailbox_of[user.id], folder_id)
    out: Counter = Counter()
    for i in items:
        key = (i.get("extended_properties") or {}).get("tslRecordId") or (
            "task:" + i["subject"] if i.get("subject", "").startswith("WV:") else ""
        )
        if key:
            out[key] += 1
    return out


def push_some(k, user, tag: str) -> tuple[list, Deadline, Reminder]:
    contacts = [c for c in k.firm.contacts if c.kind == "person"][:3]
    assert k.host.press(k.admin, SET_SYNC, [c.ref for c in contacts], {"users": [user.id]}).ok
    d = Deadline(
        id=f"sub-{tag}",
        due_date=dt.date(2026, 12, 14),
        kind="Berufungsfrist",
        pre_deadline_dates=(dt.date(2026, 12, 7),),
        responsible_ids=(user.id,),
    )
    r = Reminder(
        id=f"sub-wv-{tag}", due_date=dt.date(2026, 12, 2), subject=f"Akte {tag}", responsible_ids=(user.id,)
    )
    k.host.save_many([d, r])
    k.drain()
    return contacts, d, r


def test_subfolder_holds_every_item_class_and_cleanup_empties_it(anykanzlei):
    k = anykanzlei
    alice = k.lawyers[0]
    use_subfolder(k)
    contacts, d, r = push_some(k, alice, k.backend_name)
    (cf,) = folders_named(k, alice, "contact")
    (cal,) = folders_named(k, alice, "calendar")
    (tf,) = folders_named(k, alice, "task")
    assert set(keys_in(k, alice, cf["id"])) == {c.ref.key for c in contacts}
    calendar = keys_in(k, alice, cal["id"])
    assert {d.ref.key, f"{d.ref.key}#vorfrist1"} <= set(calendar)
    assert all(n == 1 for n in calendar.values())
    tasks = keys_in(k, alice, tf["id"])
    # Over EWS a task carries the key; a To Do task only its title (and linked resource).
    assert r.ref.key in tasks or any(key.endswith(r.subject) for key in tasks), tasks
    # Nothing of this went to the default folders.
    assert all(k.ours(alice, c.ref.key) == [] for c in contacts)
    assert k.ours(alice, d.ref.key, "calendar") == []

    # The reconcile sweep looks in the subfolder: a contact deleted on the phone comes back there.
    gone = k.server.engine.list_items(k.mailbox_of[alice.id], cf["id"])[0]
    k.graph.phone_delete(k.mailbox_of[alice.id], rest_id(gone["item_id"]))
    assert len(keys_in(k, alice, cf["id"])) == len(contacts) - 1
    k.runtime.reconciler.sweep([alice.id])
    k.drain()
    assert set(keys_in(k, alice, cf["id"])) == {c.ref.key for c in contacts}

    # Cleanup finds our items in the subfolders (and leaves the folders themselves).
    assert k.host.save_tab(
        k.admin, "user", USER_TAB, SettingsContext("user", alice.id), {"enabled": False}
    ).ok
    done = k.host.press(k.admin, CLEANUP, (), {"users": [alice.id], "confirm_over_limit": True})
    assert done.ok, done
    k.drain()
    for folder in (cf, cal, tf):
        assert keys_in(k, alice, folder["id"]) == Counter(), folder["name"]


def test_moving_between_backends_finds_the_same_subfolders(anykanzlei):
    """Pushed over one backend, then the mailbox moves to the other: the folders are found again
    (none made twice) and every item is adopted in place."""
    k = anykanzlei
    alice = k.lawyers[0]
    use_subfolder(k)
    contacts, d, r = push_some(k, alice, "move")
    before = {c: folders_named(k, alice, c) for c in CLASSES}
    assert all(len(v) == 1 for v in before.values())
    ids_before = {c: {key: n for key, n in keys_in(k, alice, before[c][0]["id"]).items()} for c in CLASSES}
    if k.backend_name == "ews":
        k.configure_graph(alice)
    else:
        k.configure(alice, password=SANDBOX_PASSWORDS[k.mailbox_of[alice.id]], backend="ews")
    k.drain()
    after = {c: folders_named(k, alice, c) for c in CLASSES}
    assert {c: [f["id"] for f in v] for c, v in after.items()} == {
        c: [f["id"] for f in v] for c, v in before.items()
    }
    for c in CLASSES:
        now = keys_in(k, alice, after[c][0]["id"])
        assert all(n == 1 for n in now.values()), (c, now)
        assert set(ids_before[c]) <= set(now), c
    # Nothing went to the default folders after the move either.
    assert all(k.ours(alice, c.ref.key) == [] for c in contacts)
    assert k.ours(alice, d.ref.key, "calendar") == []
    # The Wiedervorlage once (over Graph it carries no key; its title names it).
    titles = [
        i["subject"] for i in k.server.engine.list_items(k.mailbox_of[alice.id], after["task"][0]["id"])
    ]
    assert sum(r.subject in t for t in titles) == 1, titles


def test_a_subfolder_deleted_in_outlook_is_made_again(graph_sandbox, gbackend):
    """Over Graph: the folder deleted after the session found it; the next write names the
    reason and waits, the one after goes to a new folder of the same name."""
    import httpx

    from tsl_exchange_plugin.backends.base import TransientError, Written
    from tsl_exchange_plugin.mapping.items import ContactItem
    from tsl_exchange_plugin.sandbox.graph.testing import graph_account

    gbackend.target_folders.update({"contact": NAME})
    account = graph_account(graph_sandbox)
    session = gbackend.session(account)
    person = ContactItem("contact:sub-gone", display_name="Kontakt", file_as="Kontakt", surname="Kontakt")
    (first,) = session.create([person])
    assert isinstance(first, Written)
    folder = session._subfolder("contact")
    token = gbackend.tokens.token(account)
    with httpx.Client(
        base_url=graph_sandbox.graph_url,
        verify=__import__("ssl").create_default_context(cafile=graph_sandbox.cert_pem_path),
        headers={"Authorization": f"Bearer {token}"},
    ) as phone:
        assert phone.delete(f"/users/{account.email}/contactFolders/{folder}").status_code == 204
    (retry,) = session.create([person])
    assert isinstance(retry, TransientError) and "Unterordner" in str(retry)
    (again,) = session.create([person])
    assert isinstance(again, Written)
    assert session._subfolder("contact") != folder
    assert list(session.find_all_ours("contact")) == ["contact:sub-gone"]
