"""The probes' timer wheel on a virtual clock: each entry on its own grid,
one check in flight per entry, cancel, and an earlier entry added while the
wheel sleeps for a later one."""

from __future__ import annotations

import asyncio

from vmha.agent.wheel import Entry, Wheel
from vmha.sim.loop import VirtualClock, run_virtual


def test_entries_fire_on_their_own_grids_and_a_busy_entry_skips_slots() -> None:
    clock = VirtualClock()
    fired: dict[str, list[float]] = {"a": [], "slow": []}

    def quick(entry: Entry) -> None:
        fired["a"].append(round(clock.now(), 6))
        asyncio.get_running_loop().call_later(0.2, entry.finished)

    def slow(entry: Entry) -> None:  # each check runs 2.5 intervals
        fired["slow"].append(round(clock.now(), 6))
        asyncio.get_running_loop().call_later(2.5, entry.finished)

    async def main() -> None:
        wheel = Wheel(clock)
        wheel.add(1.0, 100.3, quick)
        wheel.add(1.0, 100.5, slow)
        await asyncio.sleep(5.0)
        await wheel.close()

    run_virtual(main(), start=100.0)
    assert fired["a"] == [100.3, 101.3, 102.3, 103.3, 104.3]
    assert fired["slow"] == [100.5, 103.5]  # 101.5 and 102.5 found it still running


def test_cancel_stops_an_entry_and_an_earlier_entry_wakes_the_wheel() -> None:
    clock = VirtualClock()
    fired: list[tuple[str, float]] = []

    def fire(name: str):
        def run(entry: Entry) -> None:
            fired.append((name, round(clock.now(), 6)))
            entry.finished()
        return run

    async def main() -> None:
        wheel = Wheel(clock)
        late = wheel.add(10.0, 109.0, fire("late"))
        await asyncio.sleep(1.0)  # the wheel sleeps until 109
        wheel.add(1.0, 101.5, fire("early"))
        await asyncio.sleep(8.9)
        late.cancel()
        await asyncio.sleep(12.0)
        assert len(wheel) == 1
        await wheel.close()

    run_virtual(main(), start=100.0)
    assert ("early", 101.5) in fired and ("early", 102.5) in fired
    assert ("late", 109.0) in fired and ("late", 119.0) not in fired


def test_a_wake_up_fires_what_is_due_within_its_batch_but_never_late_nor_too_early() -> None:
    """Entries due within BATCH_S of a wake-up fire with it (one wake-up for
    several checks), each still on its own grid; a short interval's entry
    is never fired more than a tenth of it early, and nothing fires late."""
    clock = VirtualClock()
    fired: list[tuple[str, float]] = []

    def fire(name: str):
        def run(entry: Entry) -> None:
            fired.append((name, round(clock.now(), 6)))
            entry.finished()
        return run

    async def main() -> None:
        wheel = Wheel(clock)
        wheel.add(1.0, 100.00, fire("a"))
        wheel.add(1.0, 100.08, fire("b"))  # within BATCH_S of a: fires with it
        wheel.add(0.2, 100.03, fire("short"))  # may be 0.02 s early only: its own wake-up
        wheel.add(1.0, 100.35, fire("c"))  # beyond BATCH_S of any other: its own wake-up
        await asyncio.sleep(2.1)
        await wheel.close()

    run_virtual(main(), start=100.0)
    times = {name: [t for n, t in fired if n == name] for name in ("a", "b", "short", "c")}
    assert times["a"] == [100.0, 101.0, 102.0]
    assert times["b"] == [100.0, 101.0, 102.0]  # 0.08 s early, on its 100.08 + k grid
    assert times["c"] == [100.35, 101.35]
    assert times["short"][0] == 100.03
    slots = [100.03 + 0.2 * k for k in range(len(times["short"]))]
    assert len(times["short"]) == 11
    for got, slot in zip(times["short"], slots, strict=True):
        assert slot - 0.02 - 1e-9 <= got <= slot + 1e-9
