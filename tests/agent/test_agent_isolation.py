"""Isolation logic: contact, majority, the action, the watchdog feed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agentkit import FakeWatchdog, ManualClock, config

from vmha.agent.isolation import IsolationMonitor, initial_contact
from vmha.agent.runtime import Agent, Identity

W, T = 3.0, 5.0  # contact window, isolation timeout


def monitor(action: str = "reboot", peers: tuple[str, ...] = ()) -> IsolationMonitor:
    return IsolationMonitor(peers, W, T, action, started_at=0.0)


def test_a_fresh_agent_has_one_window_of_grace() -> None:
    m = monitor()
    assert m.evaluate(W).in_contact
    v = m.evaluate(W + 1)
    assert not v.in_contact and v.isolated_for == pytest.approx(1.0) and v.feed


def test_controller_acks_keep_contact() -> None:
    m = monitor()
    for t in range(1, 30):
        m.controller_contact(float(t))
        assert m.evaluate(t + 0.5).in_contact


def test_reboot_stops_feeding_for_good_after_the_timeout() -> None:
    m = monitor("reboot")
    assert m.evaluate(W + T - 0.01).feed
    v = m.evaluate(W + T)
    assert v.act and not v.feed and m.self_fencing
    m.controller_contact(W + T + 1)  # contact returns too late: stays latched
    v = m.evaluate(W + T + 1.5)
    assert v.in_contact and not v.feed and not v.act


def test_stop_vms_acts_once_keeps_feeding_and_rearms() -> None:
    m = monitor("stop-vms")
    acts = [m.evaluate(W + T + dt).act for dt in (0.0, 0.5, 1.0)]
    assert acts == [True, False, False]
    assert m.evaluate(W + T + 2).feed
    m.controller_contact(20.0)
    assert m.evaluate(20.5).in_contact
    assert m.evaluate(20.0 + W + T).act  # a second isolation acts again


def test_a_failed_stop_vms_hook_falls_back_to_the_watchdog() -> None:
    m = monitor("stop-vms")
    assert m.evaluate(W + T).act
    m.hook_failed()
    assert not m.evaluate(W + T + 0.1).feed


def test_action_none_always_feeds() -> None:
    m = monitor("none")
    v = m.evaluate(1000.0)
    assert v.feed and not v.act and v.isolated_for > 0


@pytest.mark.parametrize(
    ("peers", "reachable", "contact"),
    [
        (("b",), ("b",), True),  # 2 of 2
        (("b", "c"), ("b",), True),  # 2 of 3
        (("b", "c"), (), False),
        (("b", "c", "d"), ("b",), False),  # 2 of 4 is no majority
        (("b", "c", "d"), ("b", "c"), True),  # 3 of 4
        (("b", "c", "d", "e"), ("b", "c"), True),  # 3 of 5
        (("b", "c", "d", "e"), ("b",), False),
    ],
)
def test_a_majority_of_the_segment_counts_as_contact(
    peers: tuple[str, ...], reachable: tuple[str, ...], contact: bool
) -> None:
    m = monitor(peers=peers)
    for p in reachable:
        m.peer_contact(p, 10.0)
    m.peer_contact("stranger", 10.0)  # not a peer: ignored
    assert m.evaluate(11.0).in_contact is contact


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="explode"):
        IsolationMonitor((), W, T, "explode", 0.0)


def _agent(tmp_path: Path, action: str, **kw: Any) -> tuple[Agent, ManualClock, FakeWatchdog]:
    cfg = config(tmp_path, isolation={"timeout_s": T, "action": action})
    clock, dog = ManualClock(), FakeWatchdog()
    ident = Identity("host1", "lab", b"b" * 8, b"s" * 32, None)
    return Agent(cfg, ident, clock, dog, **kw), clock, dog


@pytest.mark.parametrize(
    ("saved", "expected"),
    [(None, 99.0), (50.0, 99.0), (99.5, 99.5), (100.0, 100.0)],
)
def test_a_restart_grants_only_a_short_grace(saved: float | None, expected: float) -> None:
    # now 100, window 3, grace 2: contact assumed at most until 102
    assert initial_contact(100.0, saved, 3.0, 2.0) == expected


def test_a_restarted_agent_remembers_its_last_contact(tmp_path: Path) -> None:
    saved: list[float] = []
    agent, clock, dog = _agent(tmp_path, "reboot", saved_contact=1000.0 - 1.0,
                               save_contact=saved.append)

    async def run() -> None:
        for t in range(12):
            if t < 8:
                agent.monitor.controller_contact(clock.now())
            await agent.tick()
            await clock.sleep(1.0)

    asyncio.run(run())
    assert saved == [1004.0]  # 5 intervals after the remembered contact (999)
    # contact until 1007 + window 3 -> isolated at 1010, acts at 1015: still fed
    assert dog.feeds == 12 and not agent.monitor.self_fencing


def test_an_agent_without_contact_stops_feeding_its_watchdog(tmp_path: Path) -> None:
    agent, clock, dog = _agent(tmp_path, "reboot")

    async def run() -> list[int]:
        feeds = []
        for _ in range(12):  # no socket: nothing is ever acked
            await agent.tick()
            feeds.append(dog.feeds)
            await clock.sleep(1.0)
        return feeds

    feeds = asyncio.run(run())
    # start-up grace 2 s (2 intervals) + timeout 5 s: fed at t=0..6, never from t=7 on
    assert feeds == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7, 7]
    assert agent.monitor.self_fencing
    agent.close_watchdog()
    assert not dog.closed  # a self-fencing agent must not disarm the watchdog


def test_stop_vms_calls_the_hook_once(tmp_path: Path) -> None:
    agent, clock, dog = _agent(tmp_path, "stop-vms")
    calls = []

    async def hook() -> None:
        calls.append(clock.now())

    agent._stop_vms = hook

    async def run() -> None:
        for _ in range(12):
            await agent.tick()
            for _ in range(3):  # let the hook's task run before time moves on
                await asyncio.sleep(0)
            await clock.sleep(1.0)

    asyncio.run(run())
    assert calls == [1007.0] and dog.feeds == 12
