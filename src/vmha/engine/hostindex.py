"""The engine's hosts, ordered for the API's host pages (issue 18).

`Cluster` (vmha.engine.state) keeps this index in step with its cached
hosts: every host it takes, changes or drops is put here too, on the event
loop. The API's `GET /v1/hosts` reads a page from it (through
vmha.controller.hostview) in a worker thread: O(log N + page) for any sort
and filter the store offers, instead of a store query and a loop over
every host. Why not a sorted copy made per page or per change: at 10,000
hosts a mass silence changes thousands of hosts, one by one.

Names are kept in sorted lists: all of them, and one per (segment, state)
bucket. A page in the store's order, (sort field, name), walks the buckets
of the filtered groups in order of the sort field and merges each group's
buckets by name. A lock makes a page one consistent view against the
loop's changes (held for the page's walk only: no serialization, no I/O).
Order is Python's (code points), as the stores sort text.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Sequence

from vmha.domain.errors import NotFound
from vmha.domain.model import Host

Bucket = tuple[str, str]  # (segment, state value)
REBUILD_SHARE = 8  # changes above 1/8 of the hosts (and MIN): rebuilt, not one by one
REBUILD_MIN = 64


class HostIndex:
    """Hosts by name, and their names ordered for pages. `ready` once the
    cluster read every host (a new engine's first catch-up): before, pages
    come from the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, Host] = {}
        self._names: list[str] = []
        self._buckets: dict[Bucket, list[str]] = {}
        self.ready = False

    def __len__(self) -> int:
        return len(self._hosts)

    def get(self, name: str) -> Host | None:
        return self._hosts.get(name)

    # -- changes (the engine's loop) -------------------------------------------

    def apply(self, changed: Sequence[Host], gone: Iterable[str]) -> None:
        """Take `changed` (new or changed hosts), drop `gone`."""
        gone = [n for n in gone if n in self._hosts]
        with self._lock:
            if len(changed) + len(gone) > max(REBUILD_MIN, len(self._hosts) // REBUILD_SHARE):
                dropped = set(gone)
                hosts = {n: h for n, h in self._hosts.items() if n not in dropped}
                hosts.update((h.name, h) for h in changed)
                self._rebuild(hosts)
            else:
                for name in gone:
                    self._drop(name)
                for host in changed:
                    self._put(host)

    def put(self, host: Host) -> None:
        with self._lock:
            self._put(host)

    def drop(self, name: str) -> None:
        with self._lock:
            self._drop(name)

    def _put(self, host: Host) -> None:
        old = self._hosts.get(host.name)
        self._hosts[host.name] = host
        if old is None:
            insort(self._names, host.name)
        elif _bucket(old) == _bucket(host):
            return
        else:
            self._unfile(_bucket(old), host.name)
        insort(self._buckets.setdefault(_bucket(host), []), host.name)

    def _drop(self, name: str) -> None:
        old = self._hosts.pop(name, None)
        if old is None:
            return
        del self._names[bisect_left(self._names, name)]
        self._unfile(_bucket(old), name)

    def _unfile(self, bucket: Bucket, name: str) -> None:
        names = self._buckets[bucket]
        del names[bisect_left(names, name)]
        if not names:
            del self._buckets[bucket]

    def _rebuild(self, hosts: dict[str, Host]) -> None:
        self._hosts = hosts
        self._names = sorted(hosts)
        buckets: dict[Bucket, list[str]] = {}
        for name in self._names:  # in order: every bucket comes out sorted
            buckets.setdefault(_bucket(hosts[name]), []).append(name)
        self._buckets = buckets

    # -- pages (any thread) ------------------------------------------------------

    def page(self, sort: str, desc: bool, limit: int, marker: str | None,
             segment: str | None = None, state: str | None = None,
             ) -> tuple[list[Host], str | None]:
        """The hosts after `marker` (which must exist: NotFound otherwise) in
        the order (`sort` field, name), descending with `desc`, of those in
        `segment` and `state` (None: any); up to `limit`, and the last one's
        name when more follow (the store's `Page.next_marker`)."""
        with self._lock:
            after: tuple[str, str] | None = None
            if marker is not None:
                found = self._hosts.get(marker)
                if found is None:
                    raise NotFound("host", marker)
                after = (_field(found, sort), found.name)
            names = list(itertools.islice(
                self._walk(sort, desc, after, segment, state), limit + 1))
            hosts = [self._hosts[n] for n in names[:limit]]
        return hosts, names[limit - 1] if len(names) > limit else None

    def _walk(self, sort: str, desc: bool, after: tuple[str, str] | None,
              segment: str | None, state: str | None) -> Iterator[str]:
        if sort == "name" and segment is None and state is None:
            yield from _tail(self._names, desc, None if after is None else after[1])
            return
        groups: dict[str, list[list[str]]] = {}
        for (seg, st), names in self._buckets.items():
            if (segment is None or seg == segment) and (state is None or st == state):
                group = {"name": "", "segment": seg, "state": st}[sort]
                groups.setdefault(group, []).append(names)
        for value in sorted(groups, reverse=desc):
            start = None
            if after is not None and sort != "name":
                if (value > after[0]) if desc else (value < after[0]):
                    continue  # before the marker's group
                start = after[1] if value == after[0] else None
            elif after is not None:
                start = after[1]
            tails = [_tail(names, desc, start) for names in groups[value]]
            yield from tails[0] if len(tails) == 1 else heapq.merge(*tails, reverse=desc)


def _bucket(host: Host) -> Bucket:
    return host.segment, host.state.value


def _field(host: Host, sort: str) -> str:
    if sort == "segment":
        return host.segment
    return host.state.value if sort == "state" else host.name


def _tail(names: list[str], desc: bool, after: str | None) -> Iterator[str]:
    """`names` (sorted) after `after` in the walking direction, without
    copying the list."""
    if not desc:
        start = 0 if after is None else bisect_right(names, after)
        return (names[i] for i in range(start, len(names)))
    end = len(names) if after is None else bisect_left(names, after)
    return (names[i] for i in range(end - 1, -1, -1))
