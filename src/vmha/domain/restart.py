"""Instance and guest failure decisions: restart with backoff within a budget.

Called by the engine when an agent reports an instance event ("stopped",
"crashed", "watchdog", "app_failed", ...). Pure: the instance's restart
history and `now` come in; a `Reaction` (what to publish, whether and when
to restart, the new recorded state) comes out.

Layers: an unexpected stop, a crash (pvpanic), a watchdog and a guest
whose guest agent stopped answering (`guest_unresponsive`) are the guest
layer (`policy.guest`); an application probe failure is the app layer
(`policy.app`). Modes: `off` ignores; `notify` publishes the event and does
nothing else; `custom` publishes it and asks the user (`Reaction.ask`, see
vmha.domain.decisions); `auto` and `auto+notify` publish and recover: the
`Reaction.steps` run as an instance_recovery job (vmha.domain.escalation):
a guest restart (destroy + start; a reset for an unresponsive guest), or
the application's `app_actions` escalation. Guest restarts back off (base,
2x base, 4x base ... capped); the first step of an application escalation
runs at once (an in-guest restart is cheap) and later ones back off from
the restarts already in the window. At most `max_restarts` happen per
`window_s`; when the budget is spent vmha stops trying and publishes
`instance.recovery_failed`. `history` (the restart times) comes from the
store (vmha.domain.escalation.restart_times).

Watchdog actions reset/poweroff/pause are applied by the hypervisor itself:
vmha records the resulting state and publishes. `restart` (destroy + start)
is done by vmha through the Cloud port and counts against the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmha.domain import backoff
from vmha.domain.model import Event, Instance, InstanceState, Severity, SubjectKind
from vmha.domain.policy import DEFAULT_POLICY, HAPolicy, LayerMode, WatchdogAction

INSTANCE_EVENT_KINDS = frozenset(
    {"started", "stopped", "crashed", "watchdog", "app_failed", "app_ok", "app_recovered",
     "guest_unresponsive", "guest_responsive"}
)
# the instance is well again: a pending recovery is not needed any more
RECOVERED_KINDS = frozenset({"started", "app_ok", "app_recovered", "guest_responsive"})


@dataclass(frozen=True)
class Backoff:
    base_s: float = 10.0
    max_s: float = 300.0

    def delay(self, attempt: int) -> float:
        """Delay before restart number `attempt` (0-based) within the window."""
        return backoff.delay_s(attempt, self.base_s, self.max_s)


@dataclass(frozen=True)
class Reaction:
    """What to do about one instance event."""

    events: tuple[Event, ...] = ()
    state: InstanceState | None = None  # new recorded state, if it changes
    restart_in: float | None = None  # recover after this many seconds
    steps: tuple[str, ...] = ()  # how: the escalation's steps, in order
    layer: str = "guest"  # the layer that failed: guest | app
    cancel_restart: bool = False  # a pending recovery is no longer needed
    ask: str | None = None  # custom policy: ask the user about this layer

    @property
    def restart_kind(self) -> str:
        """The first step ("restart", "reset", "exec:...")."""
        return self.steps[0] if self.steps else ""


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
    if kind in RECOVERED_KINDS:
        state = InstanceState.RUNNING if kind == "started" else None
        recovered = None
        if kind in ("app_ok", "app_recovered") and pol.app is not LayerMode.OFF:
            recovered = make_event(instance, "instance.app_recovered", now,
                                   _with("application probes pass again", detail))
        return Reaction(() if recovered is None else (recovered,), state, cancel_restart=True)
    if kind == "watchdog":
        return _watchdog(instance, pol, history, now, backoff, detail)
    app = kind == "app_failed"
    mode = pol.app if app else pol.guest
    if mode is LayerMode.OFF:
        return Reaction()
    etype = {"app_failed": "instance.app_failed",
             "guest_unresponsive": "instance.guest_unresponsive"}.get(kind, "instance.crashed")
    what = {"stopped": "stopped unexpectedly", "crashed": "crashed",
            "app_failed": "application probe failed",
            "guest_unresponsive": "guest agent stopped answering"}[kind]
    event = make_event(instance, etype, now, _with(what, detail), Severity.WARNING)
    # An unresponsive guest still runs (hung): its state stays as recorded.
    state = None if kind in ("app_failed", "guest_unresponsive") else InstanceState.CRASHED
    if mode is LayerMode.CUSTOM:
        return Reaction((event,), state, ask="app" if app else "guest")
    if not mode.recovers:
        return Reaction((event,), state)
    if app:
        steps = tuple(str(s) for s in pol.app_actions)
        return _budgeted(instance, pol, history, now, backoff, (event,), state, steps, "app")
    step = "reset" if kind == "guest_unresponsive" else "restart"
    if kind == "guest_unresponsive" and pol.watchdog_action is WatchdogAction.RESTART:
        step = "restart"
    return _budgeted(instance, pol, history, now, backoff, (event,), state, (step,), "guest")


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
        return _budgeted(instance, pol, history, now, backoff, (event,), InstanceState.CRASHED,
                         ("restart",), "guest")
    return Reaction((event,))


def _budgeted(
    instance: Instance, pol: HAPolicy, history: Sequence[float], now: float,
    backoff: Backoff, events: tuple[Event, ...], state: InstanceState | None,
    steps: tuple[str, ...], layer: str,
) -> Reaction:
    used = recent(history, now, pol.window_s)
    if len(used) >= pol.max_restarts:
        reason = (
            f"restart budget spent: {len(used)} restarts in {pol.window_s:g} s "
            f"(max {pol.max_restarts}); no more automatic restarts"
        )
        failed = make_event(instance, "instance.recovery_failed", now, reason, Severity.ERROR)
        return Reaction((*events, failed), InstanceState.ERROR if state else None)
    if layer == "app":  # the first in-guest restart at once, later ones back off
        delay = backoff.delay(len(used) - 1) if used else 0.0
    else:
        delay = backoff.delay(len(used))
    return Reaction(events, state, restart_in=delay, steps=steps, layer=layer)


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
