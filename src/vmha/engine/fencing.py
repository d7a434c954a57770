"""Operators' fencing requests: which levels, may an ack be given, the audit.

Called by the Engine (vmha.engine.operators) for `vmha host fence` (an operator's power-off,
run as the host's recovery job so that the power-off *is* the job's fence
confirmation) and `vmha host fence-ack` (refused while the host still
answers, unless forced). The job itself fences (vmha.engine.jobs); nothing
here talks to a BMC, and the only I/O is the peer probe round of the monitor.
"""

from __future__ import annotations

from vmha.domain.errors import Conflict, ValidationError
from vmha.domain.model import POWER_METHODS, Event, Host, HostState, Severity, SubjectKind
from vmha.engine.detection import HostMonitor
from vmha.engine.state import Cluster

Levels = tuple[tuple[str, ...], ...]

# states from which an operator's fence starts a new recovery job
FENCEABLE = (HostState.UP, HostState.SUSPECT, HostState.PARTITIONED, HostState.FAILED)


def operator_levels(host: Host, method: str | None, default_levels: Levels,
                    configured: frozenset[str]) -> Levels:
    """The power levels an operator's fence tries: only `method`, or the
    host's levels that power it off (agent_watchdog and manual cannot)."""
    if method is not None:
        if method not in POWER_METHODS:
            raise ValidationError("method", f"{method!r} cannot power a host off; use one of "
                                            f"{', '.join(sorted(POWER_METHODS))}")
        if method not in configured:
            raise Conflict(f"no {method} fencer is configured in this controller: add the "
                           f"host's BMC ([bmcs.*] or PUT /v1/hosts/{host.name}/bmc)")
        return ((method,),)
    levels = tuple(tuple(level) for level in (host.fence_levels or default_levels)
                   if level and all(m in POWER_METHODS for m in level))
    if not levels:
        shown = [list(level) for level in (host.fence_levels or default_levels)]
        raise Conflict(f"host {host.name} has no power fence level (ipmi, redfish, "
                       f"fence_agent) in {shown}: power it off by hand, then fence-ack it")
    return levels


def fail_for_fence(cluster: Cluster, host: Host, who: str, now: float) -> Host:
    """Move `host` to `failed` for an operator's fence (through `suspect`:
    the state machine has no shortcut from `up`), so its recovery job can
    start. A host that is already failed stays as it is."""
    if host.state not in FENCEABLE:
        raise Conflict(f"host {host.name} is {host.state.value}: only an up, suspect, "
                       "partitioned or failed host can be fenced on request"
                       + ("; take it out of maintenance first"
                          if host.state is HostState.MAINTENANCE else ""))
    reason = f"operator {who} requested a fence"
    moved: Host | None = host
    if host.state is HostState.UP:
        moved = cluster.move_host(host.name, HostState.SUSPECT, reason, now)
    if host.state is not HostState.FAILED:
        moved = cluster.move_host(host.name, HostState.FAILED, reason, now, requested_by=who)
    assert moved is not None  # the host exists: checked by the caller
    return moved


async def still_answers(monitor: HostMonitor, host: str, now: float) -> str:
    """Why `host` may still be running ("" when nothing says so): current
    heartbeats, or a peer that reaches it in a fresh probe round."""
    det = monitor.detectors.get(host)
    if det is not None and det.last_seq is not None and not monitor.silent(det, now):
        age = now - (det.last_arrival or now)
        return f"its heartbeats are current (last one {age:.1f} s ago)"
    evidence = await monitor.gather_evidence(host, power=False)
    reached = sum(1 for vote in evidence.peer_votes if vote is True)
    if reached:
        return f"{reached} of {len(evidence.peer_votes)} peers still reach it"
    return ""


def ack_event(host: Host, who: str, force: bool, alive: str, now: float) -> Event:
    """`host.fence_acked`: who acknowledged, and whether they overrode a
    sign of life (`forced`, with `overridden` saying which)."""
    payload: dict[str, object] = {"host": host.name, "segment": host.segment, "by": who,
                                  "forced": bool(force and alive)}
    reason = f"operator {who} acknowledged that {host.name} is powered off"
    if force and alive:
        payload["overridden"] = alive
        reason += f", overriding: {alive}"
    payload["reason"] = reason
    severity = Severity.WARNING if force and alive else Severity.INFO
    return Event(type="host.fence_acked", subject=host.name, time=now,
                 subject_kind=SubjectKind.HOST, severity=severity, payload=payload)


def scheduling_event(host: Host, enabled: bool, who: str, reason: str, now: float) -> Event:
    """`host.enabled` / `host.disabled`: an operator switched scheduling."""
    return Event(type=f"host.{'enabled' if enabled else 'disabled'}", subject=host.name,
                 time=now, subject_kind=SubjectKind.HOST,
                 payload={"host": host.name, "segment": host.segment, "by": who,
                          "reason": reason})
