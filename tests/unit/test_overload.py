"""The controller's own backlog: never the hosts' silence, and said aloud.

`vmha.domain.overload` (the flag and its hysteresis) as a table, and the
real Controller on a virtual clock fed through a heartbeat source whose
intake stalls (a starved thread, datagrams queued in the kernel)."""

from __future__ import annotations

import asyncio

import pytest
from engine_harness import World

from vmha.domain.overload import Load, OverloadLimits, OverloadWatch
from vmha.ports import Arrival, HeartbeatBatch
from vmha.sim.loop import VirtualClock, run_virtual


@pytest.mark.parametrize(("loads", "expected"), [
    ([Load(), Load(intake_lag_s=0.9), Load(tick_lag_s=1.0)], [None, None, None]),
    ([Load(intake_lag_s=1.5), Load(intake_lag_s=2.0)], [True, None]),
    ([Load(tick_lag_s=3.0), Load(), Load(), Load()], [True, None, None, False]),
    ([Load(kernel_drops=10), Load(kernel_drops=12), Load(kernel_drops=12)], [None, True, None]),
    ([Load(intake_lag_s=2.0), Load(), Load(intake_lag_s=2.0), Load(), Load(), Load()],
     [True, None, None, None, None, False]),
])
def test_overloaded_at_once_and_cleared_after_a_quiet_spell(
    loads: list[Load], expected: list[bool | None]
) -> None:
    watch = OverloadWatch(OverloadLimits(lag_s=1.0, clear_after_s=10.0))
    changes = [watch.observe(5.0 * i, load) for i, load in enumerate(loads)]
    assert [c if c is None else c.overloaded for c in changes] == expected


def test_the_reason_names_every_signal() -> None:
    watch = OverloadWatch()
    watch.observe(0.0, Load(kernel_drops=5))
    change = watch.observe(1.0, Load(intake_lag_s=2.5, tick_lag_s=1.5, kernel_drops=9))
    assert change is not None and change.reason == (
        "heartbeat intake 2.5 s behind; detector tick 1.5 s late; "
        "4 heartbeats dropped by the kernel (receive buffer full)")


class StallingSource:
    """Heartbeats stamped when sent; while stalled, nothing is read and the
    read mark stays where the stall began (as the real intake's would)."""

    def __init__(self) -> None:
        self.clock = VirtualClock()  # the controller's, once it runs
        self.queue: list[Arrival] = []
        self.stalled_at: float | None = None
        self.lost_until = 0.0
        self.drops = self.drops_told = 0
        self.dropping = False  # the kernel drops everything (a full buffer)

    def send(self, host: str, seq: int, sent_at: float) -> None:
        if self.dropping:
            self.drops += 1
            return
        self.queue.append((host, seq, sent_at, sent_at))

    def take(self) -> HeartbeatBatch:
        if self.drops > self.drops_told:  # as the intake sees the socket's counter
            self.drops_told, self.lost_until = self.drops, self.clock.now()
        if self.stalled_at is not None:
            return HeartbeatBatch([], self.stalled_at, self.lost_until)
        batch, self.queue = self.queue, []
        return HeartbeatBatch(batch, self.clock.now(), self.lost_until)

    def stats(self) -> dict[str, int]:
        return {"kernel_drops": self.drops_told}


async def four_hosts_heard_for_30_s() -> tuple[World, StallingSource]:
    w = World()
    w.add_cluster(["h1", "h2", "h3", "h4"])
    w.source = source = StallingSource()
    source.clock = w.start().clock  # type: ignore[assignment]
    await asyncio.sleep(30)
    return w, source


def test_a_stalled_intake_makes_no_host_suspect_and_says_it_is_overloaded() -> None:
    async def main() -> World:
        w, source = await four_hosts_heard_for_30_s()
        source.stalled_at = source.clock.now()
        w.silent.add("h4")  # really dies during the stall
        await asyncio.sleep(8)
        source.stalled_at = None  # the backlog is read, with its stamps
        await asyncio.sleep(20)
        await w.close()
        return w

    w = run_virtual(main())
    suspects = [s for t, s in w.events("host.suspect")]
    assert suspects == ["h4"]
    (suspect_at,) = w.event_times("host.suspect", "h4")
    assert 37.9 <= suspect_at <= 39.0  # once the intake read past its deadline (~32.5 s)
    assert [t for t, _ in w.events("controller.")] == [
        "controller.overloaded", "controller.overload_ended"]
    (overloaded,) = w.event_times("controller.overloaded", "controller")
    assert 31.0 <= overloaded <= 31.5


def test_heartbeats_the_kernel_dropped_make_no_host_suspect() -> None:
    """A full receive buffer loses everyone's beats for 5 s: nobody turns
    suspect (our loss, not theirs), h4 that really died then is detected
    once the beats flow again, and nobody's loss estimate learned the gap."""
    async def main() -> World:
        w, source = await four_hosts_heard_for_30_s()
        source.dropping = True
        w.silent.add("h4")
        await asyncio.sleep(5)
        source.dropping = False
        await asyncio.sleep(20)
        assert w.controller is not None
        w.monitor_loss = w.controller.monitor.detectors["h1"].loss_rate()  # type: ignore[attr-defined]
        await w.close()
        return w

    w = run_virtual(main())
    assert [s for _, s in w.events("host.suspect")] == ["h4"]
    (suspect_at,) = w.event_times("host.suspect", "h4")
    assert 36.0 <= suspect_at <= 38.0  # ~2.5 s after the last drop (at 34 s), not before
    assert w.monitor_loss < 0.01  # type: ignore[attr-defined]
    assert [t for t, _ in w.events("controller.")] == [
        "controller.overloaded", "controller.overload_ended"]


def test_a_stopping_engine_does_not_call_itself_overloaded() -> None:
    """On SIGTERM the engine is stopped while a tick may still be under way;
    that tick ends after the stop's own work (seconds at 10,000 hosts),
    with nothing read meanwhile. Its lag is the shutdown's, not a backlog:
    it wrote controller.overloaded at every shutdown of the scale bench."""
    async def main() -> World:
        w, source = await four_hosts_heard_for_30_s()
        engine = w.controller
        assert engine is not None
        source.stalled_at = source.clock.now()
        await engine.stop()
        await asyncio.sleep(5)  # the stop's work, with nothing read
        now = source.clock.now()
        await engine._iteration(now, now)  # the tick that was under way
        await w.close()
        return w

    w = run_virtual(main())
    assert w.events("controller.") == []
