"""The in-process bus: the events this process committed, handed to whoever
reads the outbox in this process.

The store calls `committed(events)` after every transaction that stored
events (SqlStore/FakeStore `on_commit`), from whatever thread wrote; the
webhook dispatcher's tail reader and every SSE stream `await wait(after,
timeout)` and take the new events with `since(after)` at once, instead of
reading the store at their next poll. `since` answers only when it holds
every event after `after` (ids are consecutive up to the newest it has);
otherwise (an event committed by another process, one older than it
keeps, a gap a rolled-back PostgreSQL sequence left) it says None and the
reader reads the store, which stays the truth. A short poll remains the
fallback for events committed by another process (another controller on
the same database).

`bind()` attaches the bus to the event loop its readers run on (the
service's lifespan does it); before that, `committed` only records the
events. Thread-safe; no I/O.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
from collections import deque
from collections.abc import Sequence

from vmha.domain.model import Event

KEEP = 10_000  # newest events kept for `since`


class LocalBus:
    """See the module docstring."""

    def __init__(self, keep: int = KEEP) -> None:
        self._lock = threading.Lock()
        self._recent: deque[Event] = deque()  # in id order
        self._ids: deque[int] = deque()  # their ids (for bisect)
        self._floor = 0  # the newest id no longer kept
        self._keep = keep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    @property
    def newest(self) -> int:
        """The newest event id committed in this process (0: none yet)."""
        return self._ids[-1] if self._ids else self._floor

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the readers wait on (call it from that loop)."""
        with self._lock:
            self._loop = loop
            self._changed = asyncio.Event()

    def committed(self, events: Sequence[Event]) -> None:
        """`events` (with their ids) are committed (any thread)."""
        with self._lock:
            newer = False
            for event in events:
                if self._ids and event.id <= self._ids[-1]:  # a later commit was first
                    at = bisect.bisect_left(self._ids, event.id)
                    if at < len(self._ids) and self._ids[at] == event.id:
                        continue
                    if event.id <= self._floor:
                        continue
                    self._ids.insert(at, event.id)
                    self._recent.insert(at, event)
                else:
                    self._ids.append(event.id)
                    self._recent.append(event)
                    newer = True
            while len(self._ids) > self._keep:
                self._floor = self._ids.popleft()
                self._recent.popleft()
            loop = self._loop
        if not newer or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(self._wake)

    def since(self, after: int) -> list[Event] | None:
        """Every event after `after` in id order, when this bus holds them
        all ([] when none was committed here since); None when it cannot
        tell (read the store)."""
        with self._lock:
            if after < self._floor:
                return None
            out: list[Event] = []
            for event in reversed(self._recent):
                if event.id <= after:
                    break
                out.append(event)
        out.reverse()
        for expected, event in enumerate(out, start=after + 1):
            if event.id != expected:
                return None
        return out

    def _wake(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        if old is not None:
            old.set()

    async def wait(self, after: int, timeout: float) -> bool:
        """Return once an event newer than `after` was committed here (True),
        or after `timeout` seconds (False: the poll that finds other
        processes' events)."""
        if self.newest > after:
            return True
        if self._changed is None:
            await asyncio.sleep(timeout)
            return self.newest > after
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.newest > after
