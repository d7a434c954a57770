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


def test_app_auto_runs_its_escalation_at_once_then_backs_off() -> None:
    r = instance_event(inst(app="auto"), "app_failed", [], 1, B)
    assert r.restart_in == 0 and r.steps == ("reset",) and r.layer == "app"
    steps = ["exec:/etc/init.d/app restart", "reboot", "reset"]
    r = instance_event(inst(app="auto", app_actions=steps), "app_failed", [], 1, B)
    assert r.steps == tuple(steps) and r.restart_kind == steps[0]
    again = instance_event(inst(app="auto"), "app_failed", [0.5], 1, B)
    assert again.restart_in == 10  # restarts already used: the backoff applies


def test_unresponsive_guest_is_the_guest_layer() -> None:
    r = instance_event(inst(guest="auto"), "guest_unresponsive", [], 1, B, detail="ping")
    assert types(r) == ["instance.guest_unresponsive"] and r.steps == ("reset",)
    assert r.state is None and r.layer == "guest"  # it still runs: hung
    restart = instance_event(inst(watchdog_action="restart"), "guest_unresponsive", [], 1, B)
    assert restart.steps == ("restart",)
    notify = instance_event(inst(guest="notify"), "guest_unresponsive", [], 1, B)
    assert types(notify) == ["instance.guest_unresponsive"] and notify.restart_in is None
    assert instance_event(inst(guest="off"), "guest_unresponsive", [], 1, B).events == ()
    custom = instance_event(inst(guest="custom"), "guest_unresponsive", [], 1, B)
    assert custom.ask == "guest"


def test_app_recovered_is_published_unless_the_layer_is_off() -> None:
    r = instance_event(inst(app="notify"), "app_recovered", [], 1, B, detail="http ok")
    assert types(r) == ["instance.app_recovered"] and r.cancel_restart
    assert instance_event(inst(app="off"), "app_recovered", [], 1, B).events == ()


def test_watchdog_actions() -> None:
    reset = instance_event(inst(watchdog_action="reset"), "watchdog", [], 1, B)
    assert types(reset) == ["instance.watchdog"] and reset.state is InstanceState.RUNNING
    assert reset.restart_in is None
    off = instance_event(inst(watchdog_action="poweroff"), "watchdog", [], 1, B)
    assert off.state is InstanceState.STOPPED
    pause = instance_event(inst(watchdog_action="pause"), "watchdog", [], 1, B)
    assert pause.state is InstanceState.PAUSED
    restart = instance_event(inst(watchdog_action="restart"), "watchdog", [], 1, B)
    assert restart.restart_in == 10 and restart.steps == ("restart",)


def test_started_cancels_a_pending_restart() -> None:
    r = instance_event(inst(), "started", [], 1, B)
    assert r.cancel_restart and r.state is InstanceState.RUNNING and not r.events
