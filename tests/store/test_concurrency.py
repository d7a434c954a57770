"""Concurrent use of every Store backend: nothing lost, ids in commit order."""

from __future__ import annotations

import threading
import time

from vmha.domain.errors import Conflict
from vmha.domain.model import Event, Host, HostState, Segment
from vmha.ports import EventQuery, Store


def test_concurrent_writers_lose_no_events(store: Store) -> None:
    store.create_segment(Segment("s1"))
    writers, per_writer = 4, 15

    def write(n: int) -> None:
        name = f"h{n}"
        store.create_host(Host(name, "s1"), [Event("host.created", name, 0.0)])
        for i in range(per_writer - 1):
            state = HostState.SUSPECT if i % 2 == 0 else HostState.UP
            store.update_host(Host(name, "s1", state=state), [Event("host.x", name, i)])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = store.list_events(EventQuery(limit=10000))
    ids = [e.id for e in events]
    assert len(ids) == writers * per_writer
    assert ids == sorted(set(ids))
    for n in range(writers):
        assert sum(1 for e in events if e.subject == f"h{n}") == per_writer


def test_reader_following_since_sees_every_event_once(store: Store) -> None:
    writers, per_writer = 4, 50
    total = writers * per_writer
    seen: list[int] = []

    def write(n: int) -> None:
        for i in range(per_writer):
            store.append_events([Event("x.y", f"w{n}", float(i))])

    def read() -> None:
        deadline = time.monotonic() + 20
        while len(seen) < total and time.monotonic() < deadline:
            since = seen[-1] if seen else 0
            seen.extend(e.id for e in store.list_events(EventQuery(since=since)))
            time.sleep(0.001)  # let the writers in

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in [*threads, reader]:
        thread.join()
    stored = [e.id for e in store.list_events(EventQuery(limit=10000))]
    assert seen == stored and len(stored) == total



def test_racing_creates_of_one_key_give_one_winner(store: Store) -> None:
    names = [f"s{n}" for n in range(10)]
    wins: list[str] = []
    losses: list[str] = []

    def create_all() -> None:
        for name in names:
            try:
                store.create_segment(Segment(name), [Event("segment.created", name, 0.0)])
                wins.append(name)
            except Conflict as exc:
                assert f"segment {name!r} already exists" in exc.detail
                losses.append(name)

    threads = [threading.Thread(target=create_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == names
    assert len(losses) == 3 * len(names)
    events = store.list_events(EventQuery(limit=10000))
    assert sorted(e.subject for e in events) == names
