"""The detector loop's work follows the hosts that may change, not all of
them (issue 18): a steady cluster is looked at about once per host per
detection delay, not ten times a second, and detection is as quick."""

from __future__ import annotations

import asyncio
from typing import Any

from engine_harness import World

from vmha.sim.loop import run_virtual


def test_a_steady_cluster_costs_one_look_per_host_per_deadline() -> None:
    looks: list[float] = []

    async def main() -> World:
        w = World()
        w.add_cluster([f"h{i:03d}" for i in range(200)])
        controller = w.start()
        evaluate = controller.monitor._evaluate

        def counting(host: Any, now: float) -> None:
            looks.append(now)
            evaluate(host, now)

        controller.monitor._evaluate = counting  # type: ignore[method-assign]
        await asyncio.sleep(60)
        w.power_off("h042")
        await asyncio.sleep(10)
        await w.close()
        return w

    w = run_virtual(main())
    steady = [t for t in looks if 30.0 <= t < 60.0]
    assert len(steady) <= 200 * 30 / 1.5  # a look per host every ~2 s; the old loop: 60,000
    assert [s for _, s in w.events("host.suspect")] == ["h042"]
    (suspect,) = w.event_times("host.suspect", "h042")
    assert 61.5 <= suspect <= 63.5  # ~2.5 s after its last heartbeat


def test_a_mass_failure_runs_a_bounded_number_of_rounds_at_once() -> None:
    """200 of 300 hosts go silent together: at most `confirm_rounds_per_retry`
    confirmation rounds run at a time, and the guard pauses the segment."""
    most = 0

    async def main() -> World:
        nonlocal most
        w = World()
        w.add_cluster([f"h{i:03d}" for i in range(300)])
        probe = w.prober.probe

        async def slow_probe(via: str, target: str, timeout_s: float) -> bool | None:
            await asyncio.sleep(0.5)  # a round takes a while, as on a real network
            return await probe(via, target, timeout_s)

        w.prober.probe = slow_probe  # type: ignore[method-assign]
        controller = w.start()
        await asyncio.sleep(30)
        for i in range(200):
            w.power_off(f"h{i:03d}")
        for _ in range(200):
            await asyncio.sleep(0.1)
            most = max(most, len(controller.monitor.confirming))
        await w.close()
        return w

    w = run_virtual(main())
    assert len(w.events("host.suspect")) == 200
    assert 0 < most <= 25
    assert ("segment.recovery_paused", "s1") in w.events("segment.")


def test_a_cluster_reload_reads_again_only_the_hosts_that_changed() -> None:
    from dataclasses import replace

    from vmha.adapters.store.fake import FakeStore
    from vmha.domain.agents import AgentRecord
    from vmha.domain.model import Host, Segment
    from vmha.engine.state import Cluster

    store = FakeStore()
    store.create_segment(Segment("s1"))
    for i in range(50):
        store.create_host(Host(f"h{i:02d}", "s1"))
    store.save_agent(AgentRecord("h01", "k" * 32))
    cluster = Cluster(store)
    asyncio.run(cluster.catch_up())
    read: list[list[str]] = []
    get_hosts = store.get_hosts
    store.get_hosts = lambda names: read.append(list(names)) or get_hosts(names)  # type: ignore[method-assign, func-returns-value]
    hosts, monitored, version = cluster.hosts, cluster.monitored, cluster.version
    asyncio.run(cluster.catch_up())
    assert read == [] and cluster.hosts is hosts and cluster.monitored is monitored
    assert cluster.version == version  # nothing changed: nothing for the detector to redo
    store.update_host(replace(store.get_host("h07"), address="10.0.0.7"))  # through the API
    store.delete_host("h08")
    store.create_host(Host("h99", "s1"))
    store.save_agent(AgentRecord("h99", "k" * 32))
    asyncio.run(cluster.catch_up())
    assert sorted(read[0]) == ["h07", "h99"]
    assert cluster.hosts["h07"].address == "10.0.0.7" and "h08" not in cluster.hosts
    assert cluster.monitored == {"h01", "h99"} and cluster.version > version
    assert len(cluster.hosts) == 50
