"""One timer for many periodic checks: the prober's schedule.

An `Entry` fires at `first_at + k * interval_s`. One task sleeps on the
Clock until the earliest slot and fires every entry that is due, so 50
probes cost one sleeping task, not 50. A wake-up also fires the entries
whose slot comes within `BATCH_S` (but never more than `BATCH_SHARE` of
an entry's interval early): with 50 checks a second at random phases,
each wake-up (a loop pass, the task's resumption, a new sleep) was a
fair share of the probes' CPU; batched, there are at most 1 / `BATCH_S`
a second, and the checks they start also finish in shared loop passes.
An entry never fires late because of it, and its grid stays its own (the
next slot follows the slot, not the early fire). The rules of `run_schedule` hold
for each entry: slots stay on the entry's grid (a slow check does not
shift later ones), missed slots are skipped rather than fired in a burst,
and an entry whose check is still running at its next slot skips that
slot (one check in flight per entry; its `fire` starts the check and the
check calls `Entry.finished()`). `fire` must not block: it starts work
(callbacks, a task) and returns.

Used by `vmha.agent.prober`; it knows nothing about probes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Protocol

from vmha.ports import Clock

log = logging.getLogger(__name__)

LATE_OK_S = 0.001  # a wake-up this close before a slot fires it (timer granularity)
BATCH_S = 0.1  # a wake-up fires the entries due this soon with it ...
BATCH_SHARE = 0.1  # ... but none more than this share of its interval early


class Running(Protocol):
    """What a started check offers its entry: a way to stop it (a Task does)."""

    def cancel(self) -> object: ...


class Entry:
    __slots__ = ("busy", "cancelled", "due", "fire", "interval_s", "running")

    def __init__(self, interval_s: float, due: float, fire: Callable[[Entry], None]) -> None:
        self.interval_s, self.due, self.fire = interval_s, due, fire
        self.busy = self.cancelled = False
        self.running: Running | None = None

    def finished(self) -> None:
        """The entry's check ended: the next slot may fire it again."""
        self.busy = False
        self.running = None

    def cancel(self) -> None:
        """No more slots; a check in flight is stopped."""
        self.cancelled = True
        if self.running is not None:
            self.running.cancel()
            self.running = None


class Wheel:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Entry]] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._wake_at = math.inf

    def add(self, interval_s: float, first_at: float, fire: Callable[[Entry], None]) -> Entry:
        entry = Entry(interval_s, first_at, fire)
        heapq.heappush(self._heap, (first_at, next(self._order), entry))
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        elif first_at < self._wake_at and self._task is not asyncio.current_task():
            self._task.cancel()  # it sleeps for a later slot
            self._task = asyncio.ensure_future(self._run())
        return entry

    def __len__(self) -> int:
        return sum(not e.cancelled for _, _, e in self._heap)

    async def close(self) -> None:
        for _, _, entry in self._heap:
            entry.cancel()
        self._heap.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        heap = self._heap
        while heap:
            due, _, entry = heap[0]
            if entry.cancelled:
                heapq.heappop(heap)
                continue
            now = self._clock.now()
            if due > now + LATE_OK_S:
                self._wake_at = due
                await self._clock.sleep(due - now)
                continue
            self._fire_due(now)
        self._task, self._wake_at = None, math.inf

    def _fire_due(self, now: float) -> None:
        """Fire every entry that is due, or due within its batch window."""
        heap, held = self._heap, []
        while heap and heap[0][0] <= now + BATCH_S:
            item = heapq.heappop(heap)
            due, _, entry = item
            if entry.cancelled:
                continue
            if due > now + max(LATE_OK_S, min(BATCH_S, entry.interval_s * BATCH_SHARE)):
                held.append(item)  # too early for its interval: its own wake-up
                continue
            self._fire(entry)
            entry.due = due + (math.floor(max(0.0, now - due) / entry.interval_s) + 1) \
                * entry.interval_s
            heapq.heappush(heap, (entry.due, next(self._order), entry))
        for item in held:
            heapq.heappush(heap, item)

    @staticmethod
    def _fire(entry: Entry) -> None:
        if entry.busy:
            return  # still running: this slot is skipped
        entry.busy = True
        try:
            entry.fire(entry)
        except Exception:  # the top of the schedule: log, keep the other checks going
            log.exception("a probe check failed unexpectedly")
            entry.finished()
