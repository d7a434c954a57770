"""Instance and guest failure decisions: restart with backoff within a budget.

Called by the engine when an agent reports an instance event ("stopped",
"crashed", "watchdog", "app_failed", ...). Pure: the instance's restart
history and `now` come in; a `Reaction` (what to publish, whether and when
to restart, the new recorded state) comes out.

Layers: an unexpected stop, a crash (pvpanic) and a watchdog are the guest
layer (`policy.guest`); an application probe failure is the app layer
(`policy.app`). Modes: `off` ignores; `notify` publishes the event and does
nothing else; `custom` publishes it and asks the user (`Reaction.ask`, see
vmha.domain.decisions); `auto` and `auto+notify` publish and restart.
Restarts back off (base, 2x base, 4x base ... capped)
and at most `max_restarts` happen per `window_s`; when the budget is spent
vmha stops trying and publishes `instance.recovery_failed`.

Watchdog actions reset/poweroff/pause are applied by the hypervisor itself:
vmha records the resulting state and publishes. `restart` (destroy + start)
is done by vmha through the Cloud port and counts against the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmha.domain.model import Event, Instance, InstanceState, Severity, SubjectKind
from vmha.domain.policy import DEFAULT_POLICY, HAPolicy, LayerMode, WatchdogAction

INSTANCE_EVENT_KINDS = frozenset(
    {"started", "stopped", "crashed", "watchdog", "app_failed", "app_ok"}
)


@dataclass(frozen=True)
class Backoff:
    base_s: float = 10.0
    max_s: float = 300.0

    def delay(self, attempt: int) -> float:
        """Delay before restart number `attempt` (0-based) within the window."""
        return float(min(self.max_s, self.base_s * (2 ** min(attempt, 30))))


@dataclass(frozen=True)
class Reaction:
    """What to do about one instance event."""

    events: tuple[Event, ...] = ()
    state: InstanceState | None = None  # new recorded state, if it changes
    restart_in: float | None = None  # restart after this many seconds
    restart_kind: str = "restart"  # "restart" (stop + start) or "reset" (app)
    cancel_restart: bool = False  # a pending restart is no longer needed
    ask: str | None = None  # custom policy: ask the user about this layer


def recent(history: Sequence[float], now: float, window_s: float) -> list[float]:
    """Restart times inside the budget window."""
    return [t for t in history if now - t < window_s]


def instance_event(
    instance: Instance,
    kind: str,
    history: Sequence[float],
    now: float,
    backoff: Backoff,
    policy: HAPolicy | None = None,
    detail: str = "",
) -> Reaction:
    """Decide about event `kind` of `instance`; `history`: its restart times."""
    pol = policy or instance.policy or DEFAULT_POLICY
    if kind in ("started", "app_ok"):
        state = InstanceState.RUNNING if kind == "started" else None
        return Reaction(state=state, cancel_restart=True)
    if kind == "watchdog":
        return _watchdog(instance, pol, history, now, backoff, detail)
    mode = pol.app if kind == "app_failed" else pol.guest
    if mode is LayerMode.OFF:
        return Reaction()
    etype = "instance.app_failed" if kind == "app_failed" else "instance.crashed"
    what = {"stopped": "stopped unexpectedly", "crashed": "crashed",
            "app_failed": "application probe failed"}[kind]
    event = make_event(instance, etype, now, _with(what, detail), Severity.WARNING)
    state = None if kind == "app_failed" else InstanceState.CRASHED
    if mode is LayerMode.CUSTOM:
        return Reaction((event,), state, ask="app" if kind == "app_failed" else "guest")
    if not mode.recovers:
        return Reaction((event,), state)
    restart_kind = "reset" if kind == "app_failed" else "restart"
    return _budgeted(instance, pol, history, now, backoff, (event,), state, restart_kind)


def _watchdog(
    instance: Instance, pol: HAPolicy, history: Sequence[float], now: float,
    backoff: Backoff, detail: str,
) -> Reaction:
    if pol.guest is LayerMode.OFF:
        return Reaction()
    action = pol.watchdog_action
    reason = _with(f"guest watchdog fired; action {action.value}", detail)
    event = make_event(instance, "instance.watchdog", now, reason, Severity.WARNING)
    applied = {
        WatchdogAction.RESET: InstanceState.RUNNING,
        WatchdogAction.RESET_NOTIFY: InstanceState.RUNNING,
        WatchdogAction.POWEROFF: InstanceState.STOPPED,
        WatchdogAction.PAUSE: InstanceState.PAUSED,
    }
    if action in applied:  # the hypervisor did it already
        return Reaction((event,), applied[action])
    if pol.guest is LayerMode.CUSTOM:
        return Reaction((event,), InstanceState.CRASHED, ask="guest")
    if action is WatchdogAction.RESTART and pol.guest.recovers:
        return _budgeted(
            instance, pol, history, now, backoff, (event,), InstanceState.CRASHED, "restart"
        )
    return Reaction((event,))


def _budgeted(
    instance: Instance, pol: HAPolicy, history: Sequence[float], now: float,
    backoff: Backoff, events: tuple[Event, ...], state: InstanceState | None, kind: str,
) -> Reaction:
    used = recent(history, now, pol.window_s)
    if len(used) >= pol.max_restarts:
        reason = (
            f"restart budget spent: {len(used)} restarts in {pol.window_s:g} s "
            f"(max {pol.max_restarts}); no more automatic restarts"
        )
        failed = make_event(instance, "instance.recovery_failed", now, reason, Severity.ERROR)
        return Reaction((*events, failed), InstanceState.ERROR if state else None)
    return Reaction(events, state, restart_in=backoff.delay(len(used)), restart_kind=kind)


def make_event(
    instance: Instance, etype: str, now: float, reason: str,
    severity: Severity = Severity.INFO, **extra: object,
) -> Event:
    payload: dict[str, object] = {"instance": instance.id, "name": instance.name,
                                  "host": instance.host, "reason": reason}
    payload.update(extra)
    return Event(type=etype, subject=instance.id, time=now,
                 subject_kind=SubjectKind.INSTANCE, project=instance.project,
                 severity=severity, payload=payload)


def _with(what: str, detail: str) -> str:
    return f"{what}: {detail}" if detail else what
