"""Instance/guest failure decisions: budget, backoff, modes, watchdog actions."""

from __future__ import annotations

from vmha.domain.model import Instance, InstanceState
from vmha.domain.policy import HAPolicy
from vmha.domain.restart import Backoff, instance_event

B = Backoff(10, 300)


def inst(**policy: object) -> Instance:
    return Instance("i1", "vm1", "h1", policy=HAPolicy.from_dict(policy))


def types(reaction: object) -> list[str]:
    return [e.type for e in reaction.events]  # type: ignore[attr-defined]


def test_backoff_doubles_and_is_capped() -> None:
    assert [B.delay(n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


def test_crash_restarts_with_backoff_within_budget() -> None:
    vm = inst(guest="auto", max_restarts=3, window_s=600)
    first = instance_event(vm, "crashed", [], 100, B)
    assert types(first) == ["instance.crashed"] and first.restart_in == 10
    assert first.state is InstanceState.CRASHED
    third = instance_event(vm, "crashed", [100, 130], 200, B)
    assert third.restart_in == 40


def test_budget_spent_stops_trying_and_reports() -> None:
    vm = inst(guest="auto", max_restarts=3, window_s=600)
    r = instance_event(vm, "crashed", [100, 130, 190], 300, B)
    assert r.restart_in is None
    assert types(r) == ["instance.crashed", "instance.recovery_failed"]
    assert "budget spent" in r.events[-1].payload["reason"]
    # once the window has passed the budget is back
    later = instance_event(vm, "crashed", [100, 130, 190], 900, B)
    assert later.restart_in == 10


def test_notify_publishes_only_and_off_ignores() -> None:
    r = instance_event(inst(guest="notify"), "crashed", [], 1, B)
    assert types(r) == ["instance.crashed"] and r.restart_in is None
    assert instance_event(inst(guest="off"), "stopped", [], 1, B).events == ()
    app = instance_event(inst(app="notify"), "app_failed", [], 1, B, detail="http 500")
    assert types(app) == ["instance.app_failed"] and app.restart_in is None
    assert "http 500" in app.events[0].payload["reason"]


def test_app_auto_resets_the_instance() -> None:
    r = instance_event(inst(app="auto"), "app_failed", [], 1, B)
    assert r.restart_in == 10 and r.restart_kind == "reset"


def test_watchdog_actions() -> None:
    reset = instance_event(inst(watchdog_action="reset"), "watchdog", [], 1, B)
    assert types(reset) == ["instance.watchdog"] and reset.state is InstanceState.RUNNING
    assert reset.restart_in is None
    off = instance_event(inst(watchdog_action="poweroff"), "watchdog", [], 1, B)
    assert off.state is InstanceState.STOPPED
    pause = instance_event(inst(watchdog_action="pause"), "watchdog", [], 1, B)
    assert pause.state is InstanceState.PAUSED
    restart = instance_event(inst(watchdog_action="restart"), "watchdog", [], 1, B)
    assert restart.restart_in == 10 and restart.restart_kind == "restart"


def test_started_cancels_a_pending_restart() -> None:
    r = instance_event(inst(), "started", [], 1, B)
    assert r.cancel_restart and r.state is InstanceState.RUNNING and not r.events
