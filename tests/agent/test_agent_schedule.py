"""The heartbeat schedule: a fixed grid, no drift, no burst after a stall."""

from __future__ import annotations

import asyncio

import pytest

from vmha.agent.runtime import run_schedule
from vmha.sim.loop import VirtualClock, run_virtual


def ticks(interval: float, busy: dict[int, float], count: int) -> list[float]:
    clock = VirtualClock()
    seen: list[float] = []

    async def tick() -> None:
        seen.append(round(clock.now(), 6))
        await clock.sleep(busy.get(len(seen), 0.3 * interval))  # work inside the tick
        if len(seen) == count:
            raise asyncio.CancelledError

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):
            await run_schedule(clock, interval, tick)

    run_virtual(main(), start=100.0)
    return seen


def test_ticks_stay_on_the_grid_despite_work_in_each_tick() -> None:
    assert ticks(1.0, {}, 6) == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]


def test_sub_second_intervals_do_not_drift_over_many_ticks() -> None:
    seen = ticks(0.2, {}, 501)
    assert seen[-1] == pytest.approx(200.0, abs=1e-6)


def test_a_stall_skips_missed_slots_instead_of_bursting() -> None:
    seen = ticks(1.0, {2: 3.5}, 5)  # the second tick takes 3.5 s
    assert seen == [100.0, 101.0, 105.0, 106.0, 107.0]
