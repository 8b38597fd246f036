"""The plugin's one blinker Namespace.

Status views, the demo and tests listen here. Every receiver takes
``(sender, **extra)``; the sender is the object that emitted (worker, outbox
facade or plugin), the extras are plain data named below.
"""

from blinker import Namespace

ns = Namespace()

enqueued = ns.signal("enqueued", doc="changes=list[Change] were queued")
push_succeeded = ns.signal("push-succeeded", doc="mailbox, record_key, op, item_id")
push_failed = ns.signal("push-failed", doc="mailbox, record_key, op, error, permanent: bool, retry_in")
mailbox_status_changed = ns.signal("mailbox-status-changed", doc="mailbox, status, reason")
queue_drained = ns.signal("queue-drained", doc="the worker found nothing left to do")
batch_done = ns.signal("batch-done", doc="mailbox: one claimed batch is finished (pushed, retried or parked)")

__all__ = [
    "batch_done",
    "enqueued",
    "mailbox_status_changed",
    "ns",
    "push_failed",
    "push_succeeded",
    "queue_drained",
]
