"""While a worker runs in a process, Python hands the CPU between threads every millisecond.

Python runs one thread at a time. A thread that waited for the disk or a lock wants the CPU
back, and gets it only when the running thread gives it up: by default after 5 ms of work. The
worker's lanes build requests in pure Python, so a thread of the host that saves a record (and
waits for the disk or the queue's database a dozen times on the way) waits up to 5 ms each time
it comes back: measured in the initial-sync benchmark, its save took 5 to 20 times longer while
the worker pushed. With 1 ms it waits a fifth of that, and the lanes lose next to nothing
(their requests are built in the same time, in smaller slices).

The interval is the interpreter's, shared by the whole process: it is lowered while at least
one worker of this process runs, never raised, and put back when the last one stops, unless
someone else changed it meanwhile.
"""

from __future__ import annotations

import sys
import threading

INTERVAL = 0.001  # seconds

_lock = threading.Lock()
_users = 0
_before: float | None = None  # the interval found when the first worker started


def hold() -> None:
    """A worker of this process starts."""
    global _users, _before
    with _lock:
        _users += 1
        if _users == 1:
            current = sys.getswitchinterval()
            if current > INTERVAL:
                _before = current
                sys.setswitchinterval(INTERVAL)
            else:
                _before = None  # already as short or shorter: leave it


def release() -> None:
    """A worker of this process has stopped."""
    global _users, _before
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0 and _before is not None:
            # Close to INTERVAL: set by us (the interpreter may round it); otherwise someone
            # else has chosen a value since, and it stays.
            if abs(sys.getswitchinterval() - INTERVAL) < INTERVAL / 2:
                sys.setswitchinterval(_before)
            _before = None
