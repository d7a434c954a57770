"""A deadline queue: which keys fall due, in time order (issue 18).

Used by the detector loop so its work per tick is proportional to the
hosts that may change state, not to all hosts: each watched host has one
deadline (the moment it would turn suspect without another heartbeat); a
tick pops only the due ones. Pure: times are plain numbers, no clock.

Each key is in the queue at most once: `schedule` replaces the key's
earlier deadline. Replaced entries stay in the heap until they surface (or
until the heap holds twice as many entries as keys, when it is rebuilt),
so scheduling is O(log n) and a tick with nothing due is O(1).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
_COMPACT_SLACK = 64


class DeadlineQueue(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, tuple[float, int]] = {}
        self._order = itertools.count()

    def schedule(self, key: K, at: float) -> None:
        """`key` falls due at `at` (and no longer at its earlier time)."""
        entry = (at, next(self._order))
        self._due[key] = entry
        heapq.heappush(self._heap, (*entry, key))
        if len(self._heap) > 2 * len(self._due) + _COMPACT_SLACK:
            self._compact()

    def cancel(self, key: K) -> None:
        self._due.pop(key, None)

    def when(self, key: K) -> float | None:
        entry = self._due.get(key)
        return None if entry is None else entry[0]

    def pop_due(self, now: float) -> list[K]:
        """Every key due at or before `now`, earliest first; they leave the queue."""
        out: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, order, key = heapq.heappop(heap)
            if self._due.get(key) == (at, order):
                del self._due[key]
                out.append(key)
        return out

    def next_at(self) -> float | None:
        """The earliest deadline, or None when nothing is scheduled."""
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][:2]:
            heapq.heappop(heap)  # replaced or cancelled
        return heap[0][0] if heap else None

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def _compact(self) -> None:
        self._heap = [(at, order, key) for key, (at, order) in self._due.items()]
        heapq.heapify(self._heap)
