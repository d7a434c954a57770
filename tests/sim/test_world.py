"""The simulated world, driven by the stand-in controller of conftest.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vmha.domain.model import Event, Host
from vmha.errors import TemporaryError
from vmha.ports import PowerState
from vmha.sim.adapters import SimCloud, SimFencer, SimProber
from vmha.sim.invariants import Invariants
from vmha.sim.log import SimLog
from vmha.sim.loop import run_virtual
from vmha.sim.scenario import parse_scenario
from vmha.sim.world import World

Simulate = Any


def _lines(result: object, needle: str) -> list[str]:
    return [line for line in result.lines if needle in line]  # type: ignore[attr-defined]


def test_careful_recovery_keeps_every_invariant(simulate: Simulate) -> None:
    result, _ = simulate("  - {at: 10, do: power-off h1}\n", until=60)
    assert result.invariants_ok
    assert result.report["instances"]["vm1"]["running_on"] == ["h2"]
    assert result.report["metrics"]["detect_s"]["h1"] == pytest.approx(3.0, abs=0.6)
    assert 2.5 < result.report["metrics"]["recover_s"]["vm1"] < 6.0
    assert "  10.000  h1: inject power-off" in result.lines


def test_reckless_recovery_of_an_isolated_host_is_caught(simulate: Simulate) -> None:
    result, _ = simulate("  - {at: 10, do: network h1 down}\n", careful=False, until=60)
    inv = result.report["invariants"]
    assert inv["never_running_twice"] is False
    assert inv["no_recovery_before_fence"] is False
    assert _lines(result, "INVARIANT never_running_twice broken: running on h1, h2")


def test_an_isolated_host_self_fences_after_isolation_plus_watchdog(
        simulate: Simulate) -> None:
    """The agent's rule (vmha.agent.isolation): its last contact lasts the
    contact window (3 heartbeat intervals), then the isolation timeout (10 s)
    runs, then the watchdog's (5 s)."""
    result, _ = simulate("  - {at: 10, do: network h3 down}\n", until=60, act=False)
    [line] = _lines(result, "h3: world powered off (self-fenced")
    t = float(line.split()[0])
    assert 10 + 3 + 10 + 5 - 1.1 <= t <= 10 + 3 + 10 + 5 + 0.1


def test_a_host_cut_from_the_controller_that_reaches_half_its_peers_stays_up(
        simulate: Simulate) -> None:
    """Three hosts, one powered off: h3, cut from the controller, still
    reaches h1 — with itself two of three, a majority by the shipped agent's
    rule (the simulator's own model used to want both peers and fenced it).
    Once h1 is gone too, h3 is isolated and self-fences."""
    result, _ = simulate("  - {at: 10, do: power-off h2}\n"
                         "  - {at: 12, do: controller-link h3 down}\n"
                         "  - {at: 60, do: power-off h1}\n", until=120, act=False)
    [line] = _lines(result, "h3: world powered off (self-fenced")
    assert 60 + 3 + 10 + 5 - 2.1 <= float(line.split()[0]) <= 60 + 3 + 10 + 5 + 0.1


def test_controller_link_cut_is_no_isolation(simulate: Simulate) -> None:
    result, box = simulate("  - {at: 10, do: controller-link h3 down}\n", until=200,
                           act=False)
    assert not _lines(result, "h3: world powered off")
    assert max(box[0].seqs["h3"]) < 12  # the controller really heard nothing


def test_loss_and_jitter_neither_isolate_nor_silence_a_host(simulate: Simulate) -> None:
    cmds = "  - {at: 0, do: network h1 loss 30}\n  - {at: 0, do: network h1 delay 20 200}\n"
    result, box = simulate(cmds, until=600, act=False)
    assert not _lines(result, "world powered off")
    got = len(box[0].seqs["h1"])
    assert 0.6 * 600 < got < 0.8 * 600  # ~70 % of the heartbeats arrive


def test_an_agent_crash_resets_the_host_unless_it_comes_back(simulate: Simulate) -> None:
    result, _ = simulate("  - {at: 10, do: agent h2 crash}\n"
                         "  - {at: 12, do: agent h2 start}\n"
                         "  - {at: 30, do: agent h3 crash}\n", until=60, act=False)
    assert not _lines(result, "h2: world powered off")
    [line] = _lines(result, "h3: world powered off (self-fenced: watchdog fired, agent not")
    assert 30 < float(line.split()[0]) <= 35.01


def test_power_on_boots_the_agent_after_boot_time(simulate: Simulate) -> None:
    result, box = simulate("  - {at: 10, do: power-off h3}\n  - {at: 20, do: power-on h3}\n",
                           until=60)
    assert "  40.000  h3: world booted, agent running" in result.lines
    assert box[0].last["h3"] > 40


def test_guest_faults_are_reported_by_the_agent(simulate: Simulate) -> None:
    result, box = simulate("  - {at: 10, do: guest vm1 panic}\n"
                           "  - {at: 10, do: guest vm2 hang}\n"
                           "  - {at: 20, do: app vm2 fail}\n", until=80)
    kinds = [(vm, kind) for _, vm, kind in box[0].guest_events]
    assert ("vm1", "crashed") in kinds and ("vm2", "watchdog") in kinds
    assert ("vm2", "app_failed") in kinds
    t_app = next(t for t, vm, kind in box[0].guest_events if kind == "app_failed")
    assert 50 <= t_app < 50.1  # app_detect_s after the fault
    assert _lines(result, "vm2: world guest watchdog fired on h2: the hypervisor reset the guest")
    assert result.report["instances"]["vm1"]["running_on"] == []


def test_guest_events_wait_for_the_link(simulate: Simulate) -> None:
    _, box = simulate("  - {at: 10, do: controller-link h1 down}\n"
                      "  - {at: 11, do: vm vm1 crash}\n"
                      "  - {at: 13, do: controller-link h1 up}\n", until=30)
    t = next(t for t, vm, kind in box[0].guest_events if vm == "vm1")
    assert 13 <= t < 14.1


def test_same_seed_same_log(simulate: Simulate, base_yaml: str) -> None:
    cmds = "  - {at: 5, do: network h1 loss 40}\n  - {at: 30, do: power-off h2}\n"
    a, _ = simulate(cmds, until=90)
    b, _ = simulate(cmds, until=90)
    assert a.lines == b.lines
    other = parse_scenario(base_yaml.replace("seed: 7", "seed: 8") + "commands:\n" + cmds)
    assert other.seed == 8


def _world_run(body: object, base: str) -> object:
    async def main() -> object:
        scenario = parse_scenario(base)
        log = SimLog(asyncio.get_running_loop().time)
        world = World(scenario, 1, log, 1.0)
        world.start()
        try:
            return await body(world)  # type: ignore[operator]
        finally:
            world.stop()

    return run_virtual(main())


def test_bmc_modes(base_yaml: str) -> None:
    async def body(world: World) -> list[object]:
        fencer, h1 = SimFencer(world, "redfish"), Host("h1", "s1")
        out: list[object] = []
        world.hosts["h1"].bmc = "stuck-on"
        await fencer.power_off(h1)
        await asyncio.sleep(5)
        out.append(await fencer.power_status(h1))
        world.hosts["h1"].bmc = "unreachable"
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TemporaryError):
            await fencer.power_status(h1)
        out.append(asyncio.get_running_loop().time() - t0)
        world.hosts["h1"].bmc = "ok"
        await fencer.power_off(h1)
        out.append(await fencer.power_status(h1))
        await asyncio.sleep(2.0)
        out.append(await fencer.power_status(h1))
        return out

    assert _world_run(body, base_yaml) == [
        PowerState.ON, pytest.approx(5.0), PowerState.ON, PowerState.OFF]


def test_cloud_and_prober_on_a_dead_host(base_yaml: str) -> None:
    async def body(world: World) -> list[object]:
        cloud, prober = SimCloud(world), SimProber(world)
        await asyncio.sleep(2)
        out: list[object] = [await prober.probe("h2", "h1", 1.0)]
        world.power_off("h1", "test")
        out.append(await prober.probe("h2", "h1", 1.0))
        out.append(await prober.probe("h1", "h2", 1.0))
        t0 = asyncio.get_running_loop().time()
        inst = parse_scenario(base_yaml).instances[0]
        with pytest.raises(TemporaryError):
            await cloud.start_instance(inst, "h1")
        out.append(asyncio.get_running_loop().time() - t0)
        await cloud.start_instance(inst, "h3")
        await cloud.start_instance(inst, "h3")  # idempotent
        out.append(world.running_hosts(world.vms["vm1"]))
        return out

    assert _world_run(body, base_yaml) == [True, False, None, pytest.approx(10.0), ["h3"]]


def test_fencing_a_paused_segment_is_a_violation() -> None:
    log = SimLog(lambda: 5.0)
    inv = Invariants(log, {"h1": "s1", "h2": "s2"})
    inv.observe_event(Event("segment.recovery_paused", "s1", 1.0, payload={"segment": "s1"}))
    inv.on_power_off("h2", "ipmi")
    assert inv.summary()["no_fence_while_paused"]
    inv.on_power_off("h1", "ipmi")
    assert not inv.summary()["no_fence_while_paused"]
    inv.observe_event(Event("segment.recovery_resumed", "s1", 2.0, payload={"segment": "s1"}))
    assert "s1" not in inv.paused
