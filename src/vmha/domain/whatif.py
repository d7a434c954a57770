"""What-if: what vmha would do if some hosts failed now. Touches nothing.

Called by the API (`POST /v1/whatif`, `GET /v1/whatif/single-host`) and
the dashboard with the live inventory the API reads; pure: segments,
hosts, instances and their resolved policies come in, a verdict comes out.
It runs the same pieces the engine runs once those hosts are fenced:

- the mass-failure guard (`guard.should_pause`) on each touched segment,
  with the failed hosts counted as having just gone down, and the
  controller-isolation rule over every segment;
- the recovery planner (`planner.plan`) for the instances whose host
  layer recovers (`auto`, `auto+notify`), over the segment's schedulable
  hosts minus every failed one. The engine runs one recovery job per
  failed host and each plans when its fence is confirmed, seeing the
  moves of the jobs before it; here the hosts are planned in name order,
  each seeing the earlier ones' placements (the order of fences is not
  known in advance, so several failures in one segment may end with
  another, equally valid spread);
- `notify`, `custom` and `off` instances are reported with what happens
  to them instead (they stay down, or wait for a decision).

What it does not know: hosts whose heartbeats stopped a moment ago but
are still recorded `up` (the engine skips those as targets), and
capacity taken by instances created between now and the failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from vmha.domain import guard, planner
from vmha.domain.model import Host, HostState, Instance, RecoveryMethod, Segment
from vmha.domain.policy import DEFAULT_POLICY, CustomFallback, HAPolicy, LayerMode


@dataclass(frozen=True)
class Outcome:
    """What would happen to one instance of a failed host."""

    instance: str  # id
    name: str
    source: str  # the failed host
    action: str  # move, unplaceable, notify, custom, off
    target: str | None = None
    stopped: bool = False  # evacuate_to_stopped: defined there, not started
    priority: int = 0
    reason: str = ""


@dataclass(frozen=True)
class SegmentVerdict:
    """The mass-failure guard's view of one segment after the failures."""

    segment: str
    hosts: int  # hosts not in maintenance
    down: int  # of those, looking down after the failures
    failing: int  # of those, the hosts asked about
    threshold: float
    already_paused: bool
    would_pause: bool
    reason: str

    @property
    def recovers(self) -> bool:
        return not (self.already_paused or self.would_pause)


@dataclass(frozen=True)
class WhatIf:
    failed: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    segments: tuple[SegmentVerdict, ...]
    isolated: bool  # every host of every segment would look down: no fencing at all
    notes: tuple[str, ...] = ()

    @property
    def unplaceable(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.action == "unplaceable")

    @property
    def absorbed(self) -> bool:
        """Every protected instance finds a host and recovery is not held."""
        return (not self.isolated and not self.unplaceable
                and all(s.recovers for s in self.segments))


@dataclass(frozen=True)
class Inventory:
    """The live state what-if works on."""

    segments: Mapping[str, Segment]
    hosts: Mapping[str, Host]
    instances: Sequence[Instance]
    policies: Mapping[str, HAPolicy]  # instance id -> the policy vmha applies
    paused: frozenset[str] = frozenset()  # segments whose recovery is paused now


def policy_for(instance: Instance, inventory_segments: Mapping[str, Segment],
               hosts: Mapping[str, Host], named: Mapping[str, HAPolicy]) -> HAPolicy:
    """The policy vmha applies: inline, else `policy_name`, else the default
    policy of the segment of the instance's host, else the built-in one."""
    if instance.policy is not None:
        return instance.policy
    host = hosts.get(instance.host or "")
    segment = inventory_segments.get(host.segment) if host is not None else None
    for name in (instance.policy_name, segment.default_policy if segment else None):
        if name and name in named:
            return named[name]
    return DEFAULT_POLICY


def what_if(inv: Inventory, failed: Iterable[str], now: float,
            window_s: float = 30.0) -> WhatIf:
    """What vmha would do if every host in `failed` (known names) failed now."""
    down = tuple(sorted(set(failed)))
    hosts = {name: h for name, h in inv.hosts.items()}
    for name in down:
        hosts[name] = replace(hosts[name], state=HostState.FAILED, state_since=now)
    verdicts = _verdicts(inv, hosts, down, now, window_s)
    isolated = guard.controller_isolated([
        guard.segment_health(_of(hosts, seg), {}, now, window_s) for seg in inv.segments])
    outcomes = _plan_all(inv, hosts, down)
    return WhatIf(down, outcomes, verdicts, isolated, _notes(inv, down))


def _of(hosts: Mapping[str, Host], segment: str) -> list[Host]:
    return sorted((h for h in hosts.values() if h.segment == segment), key=lambda h: h.name)


def _verdicts(inv: Inventory, hosts: Mapping[str, Host], down: Sequence[str], now: float,
              window_s: float) -> tuple[SegmentVerdict, ...]:
    out = []
    for seg_name in sorted({hosts[name].segment for name in down}):
        segment = inv.segments.get(seg_name) or Segment(seg_name)
        members = _of(hosts, seg_name)
        # the asked-about hosts went down just now; the others when they did
        since = {h.name: now if h.name in down else h.state_since for h in members}
        health = guard.segment_health(members, since, now, window_s)
        threshold = segment.mass_failure_threshold
        pause = guard.should_pause(health, threshold)
        failing = sum(1 for h in members if h.name in down and not h.maintenance)
        if seg_name in inv.paused:
            reason = f"segment {seg_name} is paused now: nothing is fenced or recovered " \
                     "until an operator resumes it"
        elif pause:
            reason = guard.pause_reason(seg_name, health, threshold)
        else:
            reason = (f"{health.down} of {health.total} hosts down "
                      f"(pauses above {threshold:.0%}): recovery runs")
        out.append(SegmentVerdict(seg_name, health.total, health.down, failing, threshold,
                                  seg_name in inv.paused, pause, reason))
    return tuple(out)


def _plan_all(inv: Inventory, hosts: Mapping[str, Host],
              down: Sequence[str]) -> tuple[Outcome, ...]:
    """Plan each failed host in name order, each seeing the earlier moves."""
    placed = {i.id: i for i in inv.instances}
    outcomes: list[Outcome] = []
    for name in down:
        victims = sorted((i for i in placed.values() if i.host == name),
                         key=lambda i: (-_pol(inv, i).priority, i.name, i.id))
        todo = [i for i in victims if _pol(inv, i).protected]
        others = [i for i in placed.values() if i.host != name]
        segment = inv.segments.get(hosts[name].segment)
        method = segment.recovery_method if segment else RecoveryMethod.AUTO
        candidates = planner.candidates_from(_of(hosts, hosts[name].segment), others,
                                             exclude=down)
        result = planner.plan(todo, candidates, method, inv.policies)
        for p in result.placements:
            placed[p.instance] = replace(placed[p.instance], host=p.host)
        outcomes.extend(_outcomes(inv, name, victims, result))
    return tuple(outcomes)


def _pol(inv: Inventory, instance: Instance) -> HAPolicy:
    return inv.policies.get(instance.id) or instance.policy or DEFAULT_POLICY


def _outcomes(inv: Inventory, source: str, victims: Sequence[Instance],
              result: planner.Plan) -> list[Outcome]:
    placements = {p.instance: p for p in result.placements}
    unplaced = {u.instance: u.reason for u in result.unplaced}
    out = []
    for inst in victims:
        pol = _pol(inv, inst)
        base = Outcome(inst.id, inst.name, source, "", priority=pol.priority)
        if inst.id in placements:
            p = placements[inst.id]
            out.append(replace(base, action="move", target=p.host, stopped=p.stopped,
                               reason=f"restarted on {p.host}" + (" (stopped)" if p.stopped
                                                                  else "")))
        elif inst.id in unplaced:
            out.append(replace(base, action="unplaceable", reason=unplaced[inst.id]))
        else:
            out.append(replace(base, action=pol.host.value,
                               reason=_not_moved(pol)))
    return out


def _not_moved(pol: HAPolicy) -> str:
    if pol.host is LayerMode.NOTIFY:
        return "host layer notify: host.failed is published, the instance stays down"
    if pol.host is LayerMode.CUSTOM:
        after = (f"after {pol.custom_deadline_s:g} s it is evacuated to a host the planner "
                 "picks" if pol.custom_fallback is CustomFallback.AUTO
                 else "no fallback: it stays down")
        return f"host layer custom: decision.requested once the host is fenced; {after}"
    return "host layer off: vmha leaves it alone"


def _notes(inv: Inventory, down: Sequence[str]) -> tuple[str, ...]:
    notes = []
    for name in down:
        host = inv.hosts[name]
        if host.maintenance or host.state is HostState.MAINTENANCE:
            notes.append(f"{name} is in maintenance: vmha does not watch it, so its failure "
                         "would not be detected")
        elif host.state is not HostState.UP:
            notes.append(f"{name} is {host.state.value} already")
    return tuple(notes)


def single_failures(inv: Inventory, now: float,
                    window_s: float = 30.0) -> tuple[WhatIf, ...]:
    """The N+1 check: one what-if per host that is up and not in maintenance."""
    return tuple(what_if(inv, [name], now, window_s)
                 for name, host in sorted(inv.hosts.items())
                 if host.schedulable)
