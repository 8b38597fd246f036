"""The plugin's one blinker Namespace.

Status views, the demo and tests listen here. Every receiver takes
``(sender, **extra)``; the sender is the object that emitted (worker, outbox
facade or plugin), the extras are plain data named below.
"""

import logging
from typing import Any

from blinker import NamedSignal, Namespace

log = logging.getLogger(__name__)

ns = Namespace()

enqueued = ns.signal("enqueued", doc="changes=list[Change] were queued")
push_succeeded = ns.signal("push-succeeded", doc="mailbox, record_key, op, item_id")
push_failed = ns.signal("push-failed", doc="mailbox, record_key, op, error, permanent: bool, retry_in")
mailbox_status_changed = ns.signal("mailbox-status-changed", doc="mailbox, status, reason")
queue_drained = ns.signal("queue-drained", doc="the worker found nothing left to do")
parity_checked = ns.signal("parity-checked", doc="report=ParityReport after a reconcile sweep")
sweep_done = ns.signal("sweep-done", doc="report=SweepReport: one mailbox's reconcile sweep is finished")
batch_done = ns.signal("batch-done", doc="mailbox: one claimed batch is finished (pushed, retried or parked)")
server_status_changed = ns.signal(
    "server-status-changed",
    doc="server (host:port), status ('paused' or 'open'), failures, until (UNIX seconds, 0 when open)",
)


def emit(signal: NamedSignal, sender: Any, **extra: Any) -> None:
    """Send ``signal`` to each receiver in turn; a receiver that raises is logged and skipped.

    Receivers are observers (status view, audit log, demo, tests). One that fails, say an audit
    log answering "database is locked", must neither break the push that emitted the signal
    (the item is written; failing the job would write it again) nor keep the other receivers
    from hearing it. Every signal of the push path goes through here, never ``signal.send``.
    """
    if signal.is_muted:
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **extra)
        except Exception:
            log.exception("Exchange-Sync: Empfänger von %r fehlgeschlagen (ignoriert)", signal.name)


__all__ = [
    "batch_done",
    "emit",
    "enqueued",
    "mailbox_status_changed",
    "ns",
    "parity_checked",
    "push_failed",
    "push_succeeded",
    "queue_drained",
    "server_status_changed",
    "sweep_done",
]
