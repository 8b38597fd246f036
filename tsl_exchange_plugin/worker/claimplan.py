"""A claim's slices, shared by the lanes that push them (see runner.py).

Best priority first, each slice of one priority (a save is not sent in a request with 99 bulk
items); jobs of better priority handed out while the claim runs (``Outbox.claim_urgent``) go
next; the claim may end early and give back what it has not begun.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from ..outbox.base import Job


class ClaimPlan:
    """A claim's slices, shared by its lanes: best priority first, each slice of one priority
    (a save is not sent in a request with 99 bulk items), and jobs handed out during the claim
    (``claim_urgent``) placed first."""

    def __init__(self, jobs: Sequence[Job], size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._slices: deque[list[Job]] = deque(_slices(jobs, size))
        self._begun: set[int] = set()
        self.checking = threading.Lock()  # held by the lane looking for better work
        self.unsent: list[Job] = []  # jobs the claim ended without sending (end_early)
        self.ended_early = False

    def slice_count(self) -> int:
        with self._lock:
            return len(self._slices)

    def next_priority(self) -> int | None:
        with self._lock:
            return self._slices[0][0].priority if self._slices else None

    def begun(self) -> list[int]:
        """Ids of the jobs whose slice has begun: not to be handed out again in this claim (their
        row may be queued with a newer version while the older one is out)."""
        with self._lock:
            return list(self._begun)

    def take(self) -> list[Job] | None:
        with self._lock:
            if not self._slices:
                return None
            jobs = self._slices.popleft()
            self._begun.update(j.id for j in jobs)
            return jobs

    def put_first(self, jobs: Sequence[Job]) -> None:
        """Jobs handed out during the claim go next; a job the claim held but had not begun is
        replaced by its newer version. A newer version of a begun job is left for the next
        claim: two lanes must never push one record at the same time."""
        with self._lock:
            jobs = [j for j in jobs if j.id not in self._begun]
            ids = {j.id for j in jobs}
            rest = [[j for j in part if j.id not in ids] for part in self._slices]
            self._slices = deque(_slices(jobs, self.size) + [part for part in rest if part])

    def end_early(self) -> None:
        """Stop handing out slices; what was not begun goes back to the queue unsent."""
        with self._lock:
            self.unsent = [j for part in self._slices for j in part]
            self._slices.clear()
            self.ended_early = True

    def stop(self) -> list[Job]:
        """Stop handing out slices; returns the jobs not begun."""
        with self._lock:
            rest = [j for part in self._slices for j in part]
            self._slices.clear()
            return rest


def _slices(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    """Jobs (best priority first) cut into slices of up to ``size`` jobs of one priority each."""
    out: list[list[Job]] = []
    for job in jobs:
        if out and len(out[-1]) < size and out[-1][0].priority == job.priority:
            out[-1].append(job)
        else:
            out.append([job])
    return out
