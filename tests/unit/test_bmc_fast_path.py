"""BMC fast path (issue 11 item 12): when a host's heartbeat is overdue the
engine reads its BMC at once (a status read, never an action); power off
makes it failed without waiting for the detector's threshold, as fast
right after a (re)start as warm. The real Engine on a virtual clock."""

from __future__ import annotations

import asyncio

from engine_harness import World

from vmha.engine import ControllerSettings
from vmha.ports import EventQuery, PowerState
from vmha.sim.loop import run_virtual


def _power_off_at(at: float, restart_at: float | None = None) -> World:
    """Four hosts; h1 loses power at `at` (its BMC then reads off); the
    controller restarts at `restart_at` if given."""

    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4"])
        w.add_vm("vm1", "h1")
        w.start()
        if restart_at is not None:
            await asyncio.sleep(restart_at)
            await w.stop_controller()
            w.start()
            await asyncio.sleep(at - restart_at)
        else:
            await asyncio.sleep(at)
        w.power_off("h1")
        w.fencer.power["h1"] = PowerState.OFF
        await asyncio.sleep(30)
        await w.close()
        return w

    return run_virtual(main())


def _detected_after(w: World, at: float) -> float:
    failed = w.event_times("host.failed", "h1")
    assert failed, "h1 never failed"
    # the first status read came before any power-off: a read, never an action
    first_off = next(i for i, c in enumerate(w.fencer.calls) if c == ("off", "h1"))
    assert ("status", "h1") in w.fencer.calls[:first_off]
    assert w.placement("vm1")[0] != "h1"
    return failed[0] - at


def test_warm_power_off_is_failed_within_two_seconds() -> None:
    w = _power_off_at(30.3)
    took = _detected_after(w, 30.3)
    assert took <= 2.0, took  # the detector alone: ~2.5 s after the last beat
    reasons = [str(e.payload["reason"]) for e in w.store.list_events(EventQuery(limit=10000))
               if e.subject == "h1" and e.type == "host.suspect"]
    assert reasons and reasons[0].endswith("BMC read at once: power off")


def test_cold_power_off_is_as_fast_as_warm() -> None:
    """Three seconds after the controller started (the detector alone
    waits ~10 s: it cannot tell a clean link from a lossy one yet)."""
    assert _detected_after(_power_off_at(3.3), 3.3) <= 2.0


def test_power_off_right_after_a_controller_restart_is_as_fast_as_warm() -> None:
    assert _detected_after(_power_off_at(31.3, restart_at=30.0), 31.3) <= 2.0


def test_a_host_dead_while_the_controller_was_down_is_failed_soon_after_it_starts() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4"])
        w.add_vm("vm1", "h1")
        w.start()
        await asyncio.sleep(30)
        await w.stop_controller()
        w.power_off("h1")
        w.fencer.power["h1"] = PowerState.OFF
        await asyncio.sleep(10)
        w.start()
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert _detected_after(w, 40.0) <= 2.5  # never heard since the start: prior jitter


def test_bmc_reading_on_changes_nothing_and_is_read_once_per_silence() -> None:
    """The agent died, the host is on: one status read when the heartbeat
    is overdue, then the detector and confirmation rounds as before."""

    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4"])
        w.start()
        await asyncio.sleep(30.3)
        w.silent.add("h1")
        await asyncio.sleep(2.2)  # past overdue (~1.5 s), before suspicion (~2.5 s)
        w.reads_before_suspect = w.fencer.count("status", "h1")  # type: ignore[attr-defined]
        await asyncio.sleep(10)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.reads_before_suspect == 1  # type: ignore[attr-defined]
    types = [t for t, s in w.events("host.") if s == "h1"]
    assert types[0] == "host.suspect" and "host.failed" not in types[:1]
    suspect = w.event_times("host.suspect", "h1")[0]
    assert suspect >= 32.0  # by the detector, not the fast path


def test_hosts_on_the_default_fence_levels_are_read_too() -> None:
    """Hosts registered without fence levels of their own use
    `default_fence_levels` (as `vmha serve`'s agents do): their BMC is read
    by the fast path and by confirmation rounds alike (it was not)."""

    async def main() -> World:
        w = World(settings=ControllerSettings(
            default_fence_levels=(("ipmi",), ("agent_watchdog",))))
        w.add_cluster(["h1", "h2", "h3", "h4"], levels=())
        w.add_vm("vm1", "h1")
        w.start()
        await asyncio.sleep(30.3)
        w.power_off("h1")
        w.fencer.power["h1"] = PowerState.OFF
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert _detected_after(w, 30.3) <= 2.0
    failed = [e for e in w.store.list_events(EventQuery(limit=10000))
              if e.subject == "h1" and e.type == "host.failed"]
    assert failed[0].payload["reason"] == "BMC reports power off"


def test_a_host_failed_by_the_fast_path_does_not_come_back_up_at_once() -> None:
    """Its healthy time before the failure does not count for its return:
    a host without instances (recovered at once) stays recovered while it
    is off, and is fenced once (it was up again at once, then failed again)."""

    async def main() -> World:
        w = World(settings=ControllerSettings(host_return_healthy_s=3.0))
        w.add_cluster(["h1", "h2", "h3", "h4"])
        w.start()
        await asyncio.sleep(30.3)
        w.power_off("h1")
        w.fencer.power["h1"] = PowerState.OFF
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    types = [t for t, s in w.events("host.") if s == "h1"]
    assert types.count("host.fenced") == 1, types
    assert "host.up" not in types, types
    assert w.host_state("h1") == "recovered"
