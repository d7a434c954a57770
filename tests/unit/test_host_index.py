"""The engine's host index (vmha.engine.hostindex) pages hosts exactly as
the stores do: every sort, direction, filter and marker, checked against a
plain sort of the same hosts, after changes made one by one and in bulk;
the cluster keeps it in step with its cached hosts (catch-up, written-behind
changes, the API's writes)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from vmha.adapters.store.aio import ThreadedStore
from vmha.adapters.store.fake import FakeStore
from vmha.domain.errors import NotFound
from vmha.domain.model import Host, HostState, Segment
from vmha.engine.hostindex import HostIndex
from vmha.engine.state import Cluster

SEGMENTS = ("seg-a", "seg-b", "Seg-c", "_z")
STATES = tuple(HostState)


def expected(hosts: dict[str, Host], sort: str, desc: bool, limit: int, marker: str | None,
             segment: str | None, state: str | None) -> tuple[list[str], str | None]:
    """The fake store's paging (vmha.adapters.store.fake `_page`), on names."""
    def key(h: Host) -> tuple[str, str]:
        value = {"name": h.name, "segment": h.segment, "state": h.state.value}[sort]
        return value, h.name

    rows = sorted((h for h in hosts.values()
                   if (segment is None or h.segment == segment)
                   and (state is None or h.state.value == state)), key=key, reverse=desc)
    if marker is not None:
        after = key(hosts[marker])
        rows = [h for h in rows if (key(h) < after if desc else key(h) > after)]
    names = [h.name for h in rows[:limit]]
    return names, names[-1] if len(rows) > limit else None


def random_host(rng: random.Random, name: str) -> Host:
    return Host(name=name, segment=rng.choice(SEGMENTS), state=rng.choice(STATES))


def check_every_page(index: HostIndex, hosts: dict[str, Host], rng: random.Random) -> None:
    for sort in ("name", "state", "segment"):
        for desc in (False, True):
            for segment in (None, rng.choice(SEGMENTS)):
                for state in (None, rng.choice(STATES).value):
                    limit = rng.choice((1, 2, 7, 1000))
                    markers = [None, *rng.sample(sorted(hosts), min(3, len(hosts)))]
                    for marker in markers:
                        got, next_marker = index.page(sort, desc, limit, marker, segment, state)
                        assert ([h.name for h in got], next_marker) == expected(
                            hosts, sort, desc, limit, marker, segment, state), \
                            (sort, desc, limit, marker, segment, state)
                        assert all(h is hosts[h.name] for h in got)


@pytest.mark.parametrize("seed", range(4))
def test_pages_match_the_stores_order_through_changes(seed: int) -> None:
    rng = random.Random(seed)
    index = HostIndex()
    hosts = {n: random_host(rng, n) for n in (f"h{rng.randrange(10**4):04d}"
                                              for _ in range(300))}
    index.apply(list(hosts.values()), [])  # many: rebuilt at once
    check_every_page(index, hosts, rng)
    for _ in range(5):
        for _ in range(rng.randrange(1, 40)):  # few: one by one
            name = rng.choice(sorted(hosts))
            roll = rng.random()
            if roll < 0.2:
                del hosts[name]
                index.drop(name)
            elif roll < 0.4:
                new = random_host(rng, f"n{rng.randrange(10**4):04d}")
                hosts[new.name] = new
                index.put(new)
            else:
                changed = replace(hosts[name], state=rng.choice(STATES),
                                  segment=rng.choice(SEGMENTS))
                hosts[name] = changed
                index.put(changed)
        check_every_page(index, hosts, rng)
    gone = rng.sample(sorted(hosts), 100)
    moved = [replace(hosts[n], state=rng.choice(STATES)) for n in sorted(hosts)[:50]
             if n not in gone]
    index.apply(moved, gone)
    for name in gone:
        del hosts[name]
    hosts.update((h.name, h) for h in moved)
    check_every_page(index, hosts, rng)
    assert len(index) == len(hosts)


def test_a_marker_that_does_not_exist_is_not_found() -> None:
    index = HostIndex()
    index.apply([Host(name="h1", segment="s")], [])
    with pytest.raises(NotFound):
        index.page("name", False, 10, "h0")
    assert index.page("name", False, 10, None, segment="t") == ([], None)
    assert index.page("name", False, 1, None)[1] is None


class BlockingStore(FakeStore):
    """A fake store that blocks: the cluster writes host changes behind."""

    blocking = True


def in_step(cluster: Cluster) -> None:
    """The index holds the cluster's cached hosts, every one in its order."""
    assert len(cluster.index) == len(cluster.hosts)
    assert all(cluster.index.get(n) is h for n, h in cluster.hosts.items())
    for state in {h.state.value for h in cluster.hosts.values()}:
        hosts, _ = cluster.index.page("name", False, 1000, None, state=state)
        assert [h.name for h in hosts] == sorted(
            n for n, h in cluster.hosts.items() if h.state.value == state)


def test_the_cluster_keeps_its_index_in_step() -> None:
    store = BlockingStore()
    store.create_segment(Segment("s1"))
    for i in range(200):
        store.create_host(Host(f"h{i:04d}", "s1"))
    cluster = Cluster(store, ThreadedStore(store))

    async def main() -> None:
        assert not cluster.index.ready
        await cluster.catch_up()
        assert cluster.index.ready
        in_step(cluster)
        for i in range(0, 200, 3):  # written behind: listed before they are durable
            cluster.move_host(f"h{i:04d}", HostState.SUSPECT, "no heartbeat", 10.0)
        in_step(cluster)
        assert len(cluster.index.page("name", False, 1000, None, state="suspect")[0]) == 67
        h1 = store.get_host("h0001")  # the API changes a host meanwhile
        store.update_host(replace(h1, address="198.18.0.1"))
        cluster.move_host("h0001", HostState.SUSPECT, "no heartbeat", 11.0)
        await cluster.durable()
        in_step(cluster)
        assert cluster.index.get("h0001").address == "198.18.0.1"  # type: ignore[union-attr]
        store.delete_host("h0002")
        store.create_host(Host("a-new", "s1"))
        cluster.learn(store.get_hosts(["a-new"]), ["h0002"])
        in_step(cluster)
        assert cluster.index.page("name", False, 2, None) == (
            [cluster.hosts["a-new"], cluster.hosts["h0000"]], "h0000")
        store.delete_host("h0004")
        await cluster.catch_up()
        in_step(cluster)
        assert cluster.index.get("h0004") is None and len(cluster.index) == 199
        await cluster.close()

    asyncio.run(main())
