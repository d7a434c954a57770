"""The Engine: vmha's brain at run time.

Built by the composition root (vmha.controller.service) and by the simulator with
the same ports (store, clock, ids, fencers, cloud, peer prober, inbox).
`run()` loads the cluster from the store, resumes every unfinished job,
then runs the detector loop and drains the inbox until `stop()`.
Heartbeats arrive through `heartbeat()` or the heartbeat source (a cheap
in-memory update, on the hot path); everything else arrives as a typed
command (vmha.domain.commands) through the inbox, handled by
vmha.engine.operators and vmha.engine.reports: the engine is the only
writer of hosts' states, jobs and instances' observed state. All state
that matters is in the Store, so a new Engine on the same store carries on
where an old one stopped. Decisions live in `vmha.domain`; the parts here
only do I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from vmha.domain import commands as cmd
from vmha.domain import decisions, recovery
from vmha.domain.errors import (
    ConfigError,
    NotFound,
    TemporaryError,
    ValidationError,
    VmhaError,
)
from vmha.domain.model import Host, HostState, Instance, Job
from vmha.domain.planner import SCHEDULER
from vmha.engine import operators, reports
from vmha.engine.actions import ActionRunner
from vmha.engine.cloudsync import CloudSync
from vmha.engine.decisions import DecisionKeeper
from vmha.engine.detection import HostMonitor
from vmha.engine.instances import InstanceWatcher
from vmha.engine.intake import Intake
from vmha.engine.jobs import JobRunner
from vmha.engine.launch import Launcher
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import (
    Clock,
    Cloud,
    Fencer,
    HeartbeatSource,
    IdGen,
    Letter,
    Mailbox,
    PeerProber,
    Scheduling,
    Store,
)

log = logging.getLogger("vmha.engine")
Handler = Callable[["Engine", Any], Awaitable[Any]]

# command type -> its handler; a command without one is refused
HANDLERS: Mapping[type, Handler] = {
    cmd.SetMaintenance: operators.set_maintenance,
    cmd.FenceHost: operators.fence_host,
    cmd.FenceAck: operators.fence_ack,
    cmd.ResumeSegment: operators.resume_segment,
    cmd.SetScheduling: operators.set_scheduling,
    cmd.ReadPower: operators.read_power,
    cmd.InstanceAction: operators.instance_action,
    cmd.Decide: operators.decide,
    cmd.Launch: reports.launch,
    cmd.InstanceEvent: reports.instance_event,
    cmd.DomainEvents: reports.domain_events,
    cmd.Inventory: reports.inventory,
    cmd.CloudInventory: reports.cloud_inventory,
}


class Engine:
    def __init__(
        self, settings: ControllerSettings, store: Store, clock: Clock, ids: IdGen,
        fencers: Mapping[str, Fencer], cloud: Cloud, prober: PeerProber,
        inbox: Mailbox | None = None,
        heartbeats: HeartbeatSource | None = None,
    ) -> None:
        if settings.evacuation_target == SCHEDULER and not isinstance(cloud, Scheduling):
            raise ConfigError(f"evacuation_target = {SCHEDULER!r}: the cloud adapter "
                              f"({type(cloud).__name__}) has no scheduler of its own; use "
                              "the planner")
        self.settings = settings
        self.clock = clock
        self.cloud = cloud
        self.fencers = fencers
        self.inbox = inbox
        self.cluster = Cluster(store, now=clock.now, sleep=clock.sleep)
        self.monitor = HostMonitor(settings, self.cluster, clock, fencers, prober,
                                   self._host_failed)
        self.intake = Intake(heartbeats, self.cluster)
        self.jobs = JobRunner(settings, self.cluster, clock, ids, fencers, cloud, self.monitor)
        self.instances = InstanceWatcher(settings, self.cluster, clock, cloud, ids)
        self.launcher = Launcher(settings, self.cluster, clock, cloud)
        self.actions = ActionRunner(settings, self.cluster, clock, ids, cloud, self._moving,
                                    self.jobs.mover)
        self.decisions = DecisionKeeper(self.cluster, clock, ids, self.actions,
                                        self.instances.restart_times)
        self.cloudsync = CloudSync(self.cluster, clock, self._moving_now)
        self.instances.on_ask = self._ask
        self.decisions.escalate = self.instances.escalate_decision
        self.jobs.on_fenced = self._ask_after_fence
        self.enabling: dict[str, asyncio.Task[None]] = {}  # host -> its re-enable
        self._stopping = asyncio.Event()
        self._started = False
        self._handling: dict[str, asyncio.Task[None]] = {}  # commands being handled
        self._drainer: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None  # the store's re-read
        self._failing: dict[str, asyncio.Task[None]] = {}  # host -> its job being started

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Load the cluster and resume jobs (done by `run()` too)."""
        if self._started:
            return
        self._started = True
        await self.cluster.catch_up()
        now = self.clock.now()
        self.monitor.start(now)
        await self.monitor.restore()  # paused segments stay paused across a restart
        await self.jobs.resume_all()
        await self.instances.resume()
        await self.launcher.resume()
        await self.actions.resume()
        await self.decisions.resume()
        for host in list(self.cluster.hosts.values()):
            if host.state is HostState.FAILED and await self.jobs.job_for(host.name) is None:
                await self.jobs.host_failed(host, now)

    async def run(self) -> None:
        """Runs the detector loop, the job executor and the inbox until stop()."""
        await self.start()
        if self.inbox is not None:
            self._drainer = asyncio.ensure_future(self._drain(self.inbox))
        last_refresh = due = self.clock.now()
        try:
            while not self._stopping.is_set():
                try:
                    last_refresh = await self._iteration(last_refresh, due)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("detector loop iteration failed")
                due = self.clock.now() + self.settings.detector_tick_s
                await self.clock.sleep(self.settings.detector_tick_s)
        finally:
            await self._shutdown()

    async def _iteration(self, last_refresh: float, due: float) -> float:
        now = self.clock.now()
        if now - last_refresh >= self.settings.store_refresh_s:
            last_refresh = now
            await self._catch_up()
        was_blocked = {s: self.monitor.blocked(s) for s in self.cluster.segments}
        heard_until = self.intake.pull(self.monitor, now)
        await self.monitor.tick(heard_until)
        if not self._stopping.is_set():  # a stopping engine's last tick waited on its stop
            self.intake.watch(self.clock.now(), max(0.0, now - due))
        await self.monitor.hand_over_failed()
        if any(self.monitor.blocked(s) != b for s, b in was_blocked.items()):
            self.jobs.poke()
        await self._enable_returned()
        return last_refresh

    async def _catch_up(self) -> None:
        """Re-read the store (the API's changes). A real database is read
        off the event loop, in a task of its own: the tick goes on judging
        heartbeats while the reads run (one catch-up at a time); the
        in-memory store is read in line, as the simulator's runs expect."""
        if self.cluster.io.inline:
            await self.cluster.catch_up()
        elif self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.ensure_future(self._background_catch_up())

    async def _background_catch_up(self) -> None:
        try:
            await self.cluster.catch_up()
        except VmhaError as exc:
            log.warning("cannot re-read hosts and segments from the store: %s", exc)
        except Exception:
            log.exception("re-reading hosts and segments from the store failed")

    async def _enable_returned(self) -> None:
        """Returned hosts go back into the cloud's scheduling, each in a task
        of its own: a cloud call must not hold up the detector loop."""
        while self.monitor.pending_enable:
            name = self.monitor.pending_enable.pop()
            running = self.enabling.get(name)
            if running is None or running.done():
                self.monitor.not_enabled.add(name)  # no target until the cloud agrees
                self.enabling[name] = asyncio.ensure_future(self._enable(name))

    async def cloud_holds(self, held: frozenset[str], known: frozenset[str]) -> None:
        """The cloud's own word (its inventory) on which of `known` hosts a
        recovery job of vmha took out of scheduling (`held`). One that is up
        again in vmha, outside maintenance and any job, is enabled again: a
        controller restarted after its return, or an earlier attempt gave up
        while it was briefly suspect. One the cloud no longer holds is a
        target again."""
        for name in sorted(known):
            running = self.enabling.get(name)
            if running is not None and not running.done():
                continue
            host = self.cluster.hosts.get(name)
            if name not in held:
                self.monitor.not_enabled.discard(name)
            elif host is not None and host.state is HostState.UP and not host.maintenance \
                    and await self.jobs.job_for(name) is None:
                log.info("host %s is up but its compute service is still out of the "
                         "cloud's scheduling since its recovery: enabling it again", name)
                self.monitor.pending_enable.add(name)

    async def _enable(self, name: str) -> None:
        """A TemporaryError (Nova keeps a host forced down until its
        evacuations are completed) is retried after its delay while the
        host stays up; if it is not up any more, this attempt ends (the host
        stays no target) and the inventory's `cloud_holds` starts the next
        once it is up again; if it fails again, its new recovery decides."""
        done = True  # False: still no target (not enabled, host not up)
        try:
            while True:
                try:
                    await self.cloud.enable_host(name)
                    return
                except TemporaryError as exc:
                    host = self.cluster.hosts.get(name)
                    if host is None or host.state is not HostState.UP:
                        done = host is None
                        return
                    log.info("host %s not re-enabled yet: %s; trying again in %g s", name,
                             exc.detail, max(exc.delay_s, 1.0))
                    await self.clock.sleep(max(exc.delay_s, 1.0))
                except VmhaError as exc:
                    log.warning("could not re-enable host %s: %s", name, exc)
                    return
        finally:
            if done:
                self.monitor.not_enabled.discard(name)

    async def stop(self) -> None:
        self._stopping.set()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self.inbox is not None:
            self.inbox.close()
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        await cancel_all(self._handling)
        if self._catching_up is not None:
            self._catching_up.cancel()
            await asyncio.gather(self._catching_up, return_exceptions=True)
        for task in list(self.monitor.confirming.values()):
            task.cancel()
        await self.jobs.stop()
        await self.instances.stop()
        await self.launcher.stop()
        await self.actions.stop()
        await self.decisions.stop()
        await cancel_all(self.enabling)
        await cancel_all(self._failing)
        await self.cluster.close()  # what is queued is written (or re-read by the next)

    async def _host_failed(self, host: Host, now: float) -> None:
        """Start its recovery job. With a store that blocks, in a task of its
        own: the job's store calls must not hold up the detector's tick
        (hundreds of hosts fail together at a mass failure); the in-memory
        store is awaited in line, as the simulator's runs expect."""
        if self.cluster.io.inline:
            await self.jobs.host_failed(host, now)
            return
        running = self._failing.get(host.name)
        if running is None or running.done():
            self._failing[host.name] = asyncio.ensure_future(self._start_job(host, now))

    async def _start_job(self, host: Host, now: float) -> None:
        try:
            await self.jobs.host_failed(host, now)
        except VmhaError as exc:
            log.warning("cannot start the recovery of host %s yet: %s", host.name, exc)
        except Exception:
            log.exception("starting the recovery of host %s failed", host.name)
        finally:
            self._failing.pop(host.name, None)

    # -- inputs ----------------------------------------------------------------

    def heartbeat(self, host: str, seq: int, sent_at: float,
                  arrived_at: float | None = None) -> None:
        """A heartbeat from `host`'s agent, received at `arrived_at` (default
        now). Cheap, sync, in memory only: with the `heartbeats` source, the
        one input that does not go through the inbox. (`vmha serve` hands
        them over in batches instead: the source, pulled on every tick.)"""
        at = self.clock.now() if arrived_at is None else arrived_at
        self.monitor.heartbeat(host, seq, sent_at, at)

    async def _drain(self, inbox: Mailbox) -> None:
        """Take every letter and handle it in a task of its own (a fence-ack's
        probe round must not hold up the next command); tasks start in the
        order the letters arrived."""
        count = 0
        while True:
            letter = await inbox.receive()
            count += 1
            key = f"command-{count}"
            self._handling[key] = asyncio.ensure_future(self._handle(letter, key))

    async def _handle(self, letter: Letter, key: str) -> None:
        command = letter.command
        handler = HANDLERS.get(type(command))
        try:
            if handler is None:
                raise ValidationError("command", f"{type(command).__name__} is not a command "
                                                 "this engine handles")
            result = await handler(self, command)
            await self.cluster.durable()  # answered once what it changed is stored
            letter.answer(result)
        except (VmhaError, TimeoutError) as exc:
            letter.refuse(exc)
        except asyncio.CancelledError:
            letter.refuse(TemporaryError("the controller stopped while handling the request",
                                         5.0))
            raise
        except Exception as exc:
            log.exception("command %s failed", type(command).__name__)
            letter.refuse(exc)
        finally:
            self._handling.pop(key, None)

    async def require_host(self, name: str) -> Host:
        """The host, or NotFound; one created since the last refresh of the
        cluster is loaded now (operators act on what the API shows), its
        store reads off the event loop."""
        if name not in self.cluster.hosts:
            await self.cluster.catch_up()
        host = self.cluster.hosts.get(name)
        if host is None:
            raise NotFound("host", name)
        return host

    # -- custom recovery: actions and decisions -----------------------------------

    async def _ask(self, instance: Instance, layer: str, reason: str) -> None:
        host = self.cluster.hosts.get(instance.host or "")
        policy = await self.cluster.policy_of(instance, host)
        await self.decisions.request(decisions.Request(instance, layer, reason), policy)

    async def _ask_after_fence(self, job: Job, instance_ids: tuple[str, ...]) -> None:
        host = self.cluster.hosts.get(job.subject)
        for iid in instance_ids:
            inst = await self.cluster.get_instance(iid)
            if inst is None or inst.host != job.subject:
                continue
            fenced_by = recovery.host_data(job).fence.confirmed_by
            reason = f"host {job.subject} failed and was fenced ({fenced_by})"
            await self.decisions.request(
                decisions.Request(inst, "host", reason, job.subject, job.id),
                await self.cluster.policy_of(inst, host))

    async def _moving_now(self) -> frozenset[str]:
        """Every instance a host-recovery job still has to move (or moves)."""
        return frozenset(iid for job in await self.jobs.unfinished()
                         for iid in recovery.host_data(job).instances if recovery.moving(job, iid))

    async def _moving(self, instance: Instance) -> str:
        """The host-recovery job moving `instance` right now, or ""."""
        job = await self.jobs.job_for(instance.host or "")
        if job is None:
            return ""
        return job.id if recovery.moving(job, instance.id) else ""

    # -- read-only views (the simulator and tests) --------------------------------

    async def restarts(self, instance_id: str) -> int:
        """Restarts of `instance_id` within its current budget window."""
        return await self.instances.restarts(instance_id)

    @property
    def isolated(self) -> bool:
        return self.monitor.isolated

    def paused_segments(self) -> frozenset[str]:
        return frozenset(self.monitor.paused)
