"""What operators and users ask of the engine: the commands' handlers.

Called by the Engine for the commands it takes from its inbox
(vmha.domain.commands): maintenance, an operator's fence or fence-ack, a
segment resume, scheduling on/off, a power-status read, an instance action,
the answer to a custom decision. Each handler checks, changes the cluster
through the engine's parts (so the detector, the jobs and the store agree)
and returns the command's answer; refusals are Conflict/NotFound with the
reason. The rules are the domain's (vmha.domain.*) and vmha.engine.fencing.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from vmha.domain import commands as cmd
from vmha.domain import recovery
from vmha.domain.errors import Conflict, NotFound, VmhaError
from vmha.domain.model import Event, Host, HostState, Job
from vmha.domain.transitions import transition_host
from vmha.engine import fencing
from vmha.ports import Fencer

if TYPE_CHECKING:
    from vmha.engine.core import Engine

# states in which an operator may acknowledge a host is off
ACKABLE = (HostState.SUSPECT, HostState.PARTITIONED, HostState.FAILED, HostState.FENCING)


async def set_maintenance(e: Engine, c: cmd.SetMaintenance) -> Host:
    """Enter or leave maintenance. Repeating the current setting changes
    nothing; a flag that disagrees with the state is fixed without an event.
    Leaving it gives the host a fresh heartbeat grace period. Refused
    (Conflict) while the host's recovery job has not confirmed its fence."""
    host = await e.require_host(c.host)
    if c.enabled and not host.maintenance:
        job = await e.jobs.job_for(c.host)
        if job is not None and not recovery.fence_confirmed(job):
            # the job would never record host.fenced (maintenance is no
            # fenced-able state) and would move the instances anyway
            raise Conflict(f"host {c.host} has recovery job {job.id} open and its fence is "
                           "not confirmed yet: maintenance is refused until the fence is "
                           "confirmed (or acknowledged with fence-ack)")
    now = e.clock.now()
    target = HostState.MAINTENANCE if c.enabled else HostState.UP
    reason = c.reason or ("maintenance on" if c.enabled else "maintenance off")

    def switch(current: Host) -> tuple[Host, list[Event]] | None:
        if current.maintenance == c.enabled:
            return None
        if current.state is target:  # the flag disagreed with the state: fix the flag
            return replace(current, maintenance=c.enabled), []
        moved, event = transition_host(current, target, reason, now)
        if c.by:
            event = replace(event, payload={**event.payload, "by": c.by})
        return replace(moved, maintenance=c.enabled), [event]

    e.cluster.change_host(c.host, switch)
    await e.cluster.durable()  # the answer is the stored host (its new version)
    saved = e.cluster.hosts.get(c.host, host)
    if not c.enabled and host.maintenance:
        e.monitor.detector(c.host).last_arrival = now
        e.monitor.healthy_since.pop(c.host, None)
    return saved


async def fence_ack(e: Engine, c: cmd.FenceAck) -> None:
    """An operator confirms the host is powered off (manual fence). Refused
    (Conflict) while its heartbeats are current or a peer still reaches it,
    unless `force`; every ack is recorded as `host.fence_acked`."""
    host = await e.require_host(c.host)
    if host.state not in ACKABLE:
        raise Conflict(f"host {c.host!r} is {host.state.value}: only a suspect, partitioned, "
                       "failed or fencing host can be acknowledged as powered off")
    alive = await fencing.still_answers(e.monitor, c.host, e.clock.now())
    if alive and not c.force:
        raise Conflict(f"refusing fence-ack of host {c.host}: {alive}, so it may still "
                       "run its instances and they would run twice; check that it is "
                       "really powered off, then repeat with force (--force)")
    now = e.clock.now()
    current = e.cluster.hosts[c.host]
    e.cluster.append([fencing.ack_event(current, c.by, c.force, alive, now)])
    job = await e.jobs.job_for(c.host)
    if job is None and current.state in (HostState.SUSPECT, HostState.PARTITIONED):
        failed = e.cluster.move_host(
            c.host, HostState.FAILED, f"operator {c.by} acknowledged it is off", now)
        if failed is not None:
            e.jobs.acks[c.host] = c.by
            await e.jobs.host_failed(failed, now)
    elif job is not None:
        e.jobs.acks[c.host] = c.by
    e.jobs.poke()


async def fence_host(e: Engine, c: cmd.FenceHost) -> Job:
    """An operator's power-off of the host through its power fence levels
    (or only `method`), run as its recovery job: the fence is the job's
    fence confirmation, and its instances are then recovered."""
    current = await e.require_host(c.host)
    levels = fencing.operator_levels(current, c.method, e.settings.default_fence_levels,
                                     frozenset(e.fencers))
    job = await e.jobs.job_for(c.host)
    if job is not None:
        if recovery.fence_confirmed(job):
            raise Conflict(f"host {c.host} is already fenced (job {job.id} is "
                           f"{job.state.value}): nothing to power off")
        e.jobs.requests[c.host] = (c.by, levels)
        e.jobs.start(job.id)
        e.jobs.poke()
        return job
    failed = fencing.fail_for_fence(e.cluster, current, c.by, e.clock.now())
    job = await e.jobs.host_failed(failed, e.clock.now(), requested_by=c.by, levels=levels)
    return job


async def resume_segment(e: Engine, c: cmd.ResumeSegment) -> None:
    """Resume automatic fencing in a segment the mass-failure guard paused;
    Conflict when it is not paused."""
    if c.segment not in e.cluster.segments:
        await e.cluster.catch_up()
    if c.segment not in e.cluster.segments:
        raise NotFound("segment", c.segment)
    if c.segment not in e.monitor.paused:
        raise Conflict(f"automatic recovery of segment {c.segment} is not paused: nothing "
                       "to resume (the mass-failure guard pauses a segment when too "
                       "many of its hosts fail at once)")
    e.monitor.resume(c.segment, c.by, e.clock.now())
    e.jobs.poke()


async def set_scheduling(e: Engine, c: cmd.SetScheduling) -> None:
    """Let the host receive instances again (`enabled`) or not, through the
    cloud (Nova's compute service, or vmha's own placement); recorded as
    `host.enabled` / `host.disabled` with who and why."""
    await e.require_host(c.host)
    why = c.reason or f"{'enabled' if c.enabled else 'disabled'} by operator {c.by}"
    call = e.cloud.enable_host(c.host) if c.enabled else e.cloud.disable_host(c.host, why)
    await asyncio.wait_for(call, e.settings.evacuate_timeout_s)
    current = e.cluster.hosts[c.host]
    e.cluster.append([fencing.scheduling_event(current, c.enabled, c.by, why, e.clock.now())])


async def read_power(e: Engine, c: cmd.ReadPower) -> dict[str, str]:
    """Every power method's reading of the host: "on", "off" or "error: ..."."""
    host = await e.require_host(c.host)

    async def read(fencer: Fencer) -> str:
        try:
            return (await fencer.power_status(host)).value
        except VmhaError as exc:
            return f"error: {exc.detail}"

    methods = sorted(e.fencers)
    readings = await asyncio.gather(*(read(e.fencers[m]) for m in methods))
    return dict(zip(methods, readings, strict=True))


async def instance_action(e: Engine, c: cmd.InstanceAction) -> Job:
    """Start an action on an instance as a job (Conflict says why not); a
    pending custom decision of the instance is settled by it."""
    job = await e.actions.submit(c.instance, c.action, c.target, c.by)
    await e.decisions.superseded(job)
    return job


async def decide(e: Engine, c: cmd.Decide) -> tuple[Job, Job | None]:
    """Answer a custom decision: (the decision job, the action job)."""
    return await e.decisions.answer(c.token, c.action, c.by, c.project)
