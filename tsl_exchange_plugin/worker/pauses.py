"""Back-off that belongs to a mailbox or a server, as this process sees it right now.

The queue's store carries pauses to every worker process (claims skip paused mailboxes
and servers); this board makes them take effect inside the process at the moment the
answer comes in, before the store has been written and before another lane of the same
claim sends its next request:

* Requests to one mailbox go one at a time (``MailboxGuard.request``). A lane may build
  its next request while another lane's request is out, but it sends only after that
  answer is known; so a busy answer is never overtaken by a request that was sent after
  it, inside the back-off the server asked for.
* A busy answer pauses the mailbox for the back-off the server named; a transport failure
  pauses the whole server (every mailbox on that host:port) until the worker has recorded
  the step in the store and put its end here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..backends.base import ExchangeError, RequestSlot, Resting, TransientError

# How long a server rests in this process between its failure and the worker's
# recording of the real step (a few database writes); then ``pause_server`` replaces it.
PROVISIONAL_SERVER_PAUSE = 30.0


class PauseBoard:
    """The pauses this process knows of, by mailbox and by server (host:port)."""

    def __init__(self, *, busy_back_off: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.busy_back_off = busy_back_off  # a busy answer that named no back-off
        self.clock = clock
        self._lock = threading.Lock()
        self._mailboxes: dict[str, float] = {}
        self._servers: dict[str, float] = {}
        self._guards: dict[str, MailboxGuard] = {}

    def guard(self, mailbox: str, server: str) -> MailboxGuard:
        with self._lock:
            guard = self._guards.get(mailbox)
            if guard is None or guard.server != server:
                guard = self._guards[mailbox] = MailboxGuard(self, mailbox, server)
            return guard

    def pause_mailbox(self, mailbox: str, until: float) -> None:
        with self._lock:
            self._mailboxes[mailbox] = max(until, self._mailboxes.get(mailbox, 0.0))

    def pause_server(self, server: str, until: float) -> None:
        with self._lock:
            self._servers[server] = until

    def open_server(self, server: str) -> None:
        with self._lock:
            self._servers.pop(server, None)

    def resting(self, mailbox: str, server: str) -> Resting | None:
        """Why a request to ``mailbox`` must not go now, or None."""
        now = self.clock()
        with self._lock:
            server_until = self._servers.get(server, 0.0)
            mailbox_until = self._mailboxes.get(mailbox, 0.0)
        if server_until > now:
            return Resting(
                f"Der Exchange-Server {server} ist nicht erreichbar; nächster Versuch in "
                f"{server_until - now:.0f} s.",
                server_until - now,
                pause="server",
            )
        if mailbox_until > now:
            return Resting(
                f"Der Exchange-Server hat um eine Pause für dieses Postfach gebeten; weiter in "
                f"{mailbox_until - now:.1f} s.",
                mailbox_until - now,
                pause="mailbox",
            )
        return None


class MailboxGuard:
    """The ``RequestGuard`` of one mailbox (shared by its sessions, so by all lanes)."""

    def __init__(self, board: PauseBoard, mailbox: str, server: str) -> None:
        self.board = board
        self.mailbox = mailbox
        self.server = server
        self._turn = threading.Lock()
        self.answers = 0  # requests the server answered, for the probe's verdict

    @contextmanager
    def request(self) -> Iterator[RequestSlot]:
        with self._turn:
            yield _Slot(self)


class _Slot:
    def __init__(self, guard: MailboxGuard) -> None:
        self.guard = guard

    def check(self) -> None:
        resting = self.guard.board.resting(self.guard.mailbox, self.guard.server)
        if resting is not None:
            raise resting

    def answered(self) -> None:
        self.guard.answers += 1  # under the guard's turn lock

    def failed(self, error: ExchangeError) -> None:
        if isinstance(error, Resting):
            return  # nothing was sent
        if isinstance(error, TransientError) and error.pause == "server":
            board = self.guard.board
            board.pause_server(self.guard.server, board.clock() + PROVISIONAL_SERVER_PAUSE)
            return
        self.guard.answers += 1  # an answer, if not a welcome one: the server is up
        if isinstance(error, TransientError) and error.pause == "mailbox":
            board = self.guard.board
            back_off = error.back_off
            if back_off is None or not math.isfinite(back_off) or back_off <= 0:
                back_off = board.busy_back_off
            board.pause_mailbox(self.guard.mailbox, board.clock() + back_off)
