"""The cluster's host changes and bare events are written behind, in order,
batched, off the event loop (vmha.engine.state, issue 13): a mass change is
one store call, not one per host; a change the API made meanwhile survives;
a store that is down is retried in order; nothing is committed (so nothing
published) before `durable()` says so."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from vmha.adapters.store.aio import ThreadedStore
from vmha.adapters.store.fake import FakeStore
from vmha.domain.errors import StoreUnavailable
from vmha.domain.model import Event, Host, HostState, Segment
from vmha.engine.state import Cluster
from vmha.ports import EventQuery


class CountingStore(FakeStore):
    """A fake store that blocks (so the cluster writes behind, in threads),
    counts its write calls, and fails the next `fail` of them."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self.fail = 0

    def _count(self, name: str) -> None:
        self.calls.append(name)
        self.threads.add(threading.current_thread().name)
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the database is down (test)", 0.01)

    def update_hosts(self, changes: Sequence[tuple[Host, Sequence[Event]]]) -> list[Host | None]:
        self._count("update_hosts")
        return super().update_hosts(changes)

    def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        self._count("update_host")
        return super().update_host(host, events)

    def append_events(self, events: Sequence[Event]) -> list[Event]:
        self._count("append_events")
        return super().append_events(events)


def cluster_of(n: int) -> tuple[CountingStore, Cluster]:
    store = CountingStore()
    store.create_segment(Segment("s1"))
    for i in range(n):
        store.create_host(Host(f"h{i:04d}", "s1"))

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    cluster = Cluster(store, ThreadedStore(store), sleep=no_wait)
    return store, cluster


def types_and_subjects(store: FakeStore) -> list[tuple[str, str]]:
    return [(e.type, e.subject) for e in store.list_events(EventQuery(limit=10000))]


def test_a_mass_silence_is_one_store_call_not_one_per_host() -> None:
    store, cluster = cluster_of(1000)
    committed: list[int] = []
    store.on_commit = lambda events: committed.append(len(events))

    async def main() -> None:
        await cluster.catch_up()
        for name in sorted(cluster.hosts):
            moved = cluster.move_host(name, HostState.SUSPECT, "no heartbeat", 10.0)
            assert moved is not None and moved.state is HostState.SUSPECT  # seen at once
        assert store.calls == [] and committed == []  # not written on the loop, nor yet
        cluster.append([Event(type="segment.recovery_paused", subject="s1", time=10.0)])
        await cluster.durable()

    asyncio.run(main())
    assert store.calls == ["update_hosts", "append_events"]
    assert store.threads and threading.main_thread().name not in store.threads
    assert committed == [1000, 1]  # the host events in one commit, the guard's after
    assert all(h.state is HostState.SUSPECT for h in store.get_hosts(sorted(cluster.hosts)))
    events = types_and_subjects(store)
    assert events[-1] == ("segment.recovery_paused", "s1")
    assert [s for t, s in events if t == "host.suspect"] == sorted(cluster.hosts)
    assert all(h.version == 2 for h in cluster.hosts.values())  # the cache has the stored copies


def test_changes_queued_for_one_host_are_written_in_order() -> None:
    store, cluster = cluster_of(2)

    async def main() -> None:
        await cluster.catch_up()
        cluster.move_host("h0000", HostState.SUSPECT, "silent", 1.0)
        cluster.move_host("h0000", HostState.FAILED, "peers cannot reach it", 2.0)
        await cluster.durable()
        cluster.move_host("h0000", HostState.FENCING, "powering off", 3.0)
        await cluster.durable()

    asyncio.run(main())
    h = store.get_host("h0000")
    assert h.state is HostState.FENCING and cluster.hosts["h0000"] == h
    assert [t for t, s in types_and_subjects(store) if s == "h0000"] == [
        "host.suspect", "host.failed", "host.fencing"]


def test_a_change_the_api_made_meanwhile_survives_the_engines() -> None:
    store, cluster = cluster_of(1)

    async def main() -> None:
        await cluster.catch_up()
        # the API sets an address while the engine's move is queued
        api = store.get_host("h0000")
        store.update_host(replace(api, address="10.0.0.9"))
        store.calls.clear()
        cluster.move_host("h0000", HostState.SUSPECT, "silent", 1.0)
        cluster.move_host("h0000", HostState.FAILED, "confirmed", 2.0)
        await cluster.durable()

    asyncio.run(main())
    h = store.get_host("h0000")
    assert (h.state, h.address) == (HostState.FAILED, "10.0.0.9")  # both survive
    assert cluster.hosts["h0000"] == h
    assert store.calls == ["update_hosts", "update_host"]  # skipped as stale, then made again
    assert [t for t, s in types_and_subjects(store) if s == "h0000"] == [
        "host.suspect", "host.failed"]


def test_a_store_that_is_down_is_written_again_in_order() -> None:
    store, cluster = cluster_of(3)
    store.fail = 2

    async def main() -> None:
        await cluster.catch_up()
        cluster.move_host("h0000", HostState.SUSPECT, "silent", 1.0)
        cluster.append([Event(type="controller.overloaded", subject="controller", time=1.0)])
        cluster.move_host("h0001", HostState.SUSPECT, "silent", 1.5)
        await cluster.durable()

    asyncio.run(main())
    assert store.calls == ["update_hosts"] * 3 + ["append_events", "update_hosts"]
    assert types_and_subjects(store)[-3:] == [
        ("host.suspect", "h0000"), ("controller.overloaded", "controller"),
        ("host.suspect", "h0001")]


def test_a_host_deleted_meanwhile_leaves_the_cache() -> None:
    store, cluster = cluster_of(2)

    async def main() -> Any:
        await cluster.catch_up()
        store.delete_host("h0001")
        cluster.move_host("h0001", HostState.SUSPECT, "silent", 1.0)
        await cluster.durable()

    asyncio.run(main())
    assert "h0001" not in cluster.hosts
    assert ("host.suspect", "h0001") not in types_and_subjects(store)
