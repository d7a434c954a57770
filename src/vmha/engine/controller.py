"""The Controller: vmha's brain at run time.

Built by `vmha serve` and by the simulator with the same ports (store,
clock, ids, fencers, cloud, peer prober, bus). `run()` loads the cluster
from the store, resumes every unfinished recovery job, then runs the
detector loop until `stop()`. Agents feed it heartbeats and instance
events; operators acknowledge fences, resume segments and set maintenance.
All state that matters is in the Store, so a new Controller on the same
store carries on where an old one stopped. Decisions live in
`vmha.domain`; the parts here only do I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace

from vmha.domain import decisions, recovery
from vmha.domain.errors import Conflict, NotFound, VmhaError
from vmha.domain.model import Host, HostState, Instance, InstanceState, Job
from vmha.engine import fencing
from vmha.engine.actions import ActionRunner
from vmha.engine.decisions import DecisionKeeper
from vmha.engine.detection import HostMonitor
from vmha.engine.instances import InstanceWatcher
from vmha.engine.jobs import JobRunner
from vmha.engine.launch import Launcher
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.ports import Bus, Clock, Cloud, Fencer, IdGen, PeerProber, Store

log = logging.getLogger("vmha.engine")
# Hypervisor events the guest layer reacts to; paused, resumed, rebooted and
# guest-agent (dis)connections are only informative.
DOMAIN_EVENT_KINDS = frozenset({"started", "stopped", "crashed", "watchdog"})


class Controller:
    def __init__(
        self, settings: ControllerSettings, store: Store, clock: Clock, ids: IdGen,
        fencers: Mapping[str, Fencer], cloud: Cloud, prober: PeerProber,
        bus: Bus | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.cloud = cloud
        self.cluster = Cluster(store, bus)
        self.monitor = HostMonitor(settings, self.cluster, clock, fencers, prober,
                                   self._host_failed)
        self.jobs = JobRunner(settings, self.cluster, clock, ids, fencers, cloud, self.monitor)
        self.instances = InstanceWatcher(settings, self.cluster, clock, cloud)
        self.launcher = Launcher(settings, self.cluster, clock, cloud)
        self.actions = ActionRunner(settings, self.cluster, clock, ids, cloud, self._moving)
        self.decisions = DecisionKeeper(self.cluster, clock, ids, self.actions,
                                        lambda iid: self.instances.history.setdefault(iid, []))
        self.instances.on_ask = self._ask
        self.jobs.on_fenced = self._ask_after_fence
        self._stopping = asyncio.Event()
        self._started = False

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Load the cluster and resume jobs (done by `run()` too)."""
        if self._started:
            return
        self._started = True
        self.cluster.refresh()
        now = self.clock.now()
        self.monitor.start(now)
        self.monitor.restore()  # paused segments stay paused across a restart
        self.jobs.resume_all()
        self.instances.resume()
        self.launcher.resume()
        self.actions.resume()
        self.decisions.resume()
        for host in list(self.cluster.hosts.values()):
            if host.state is HostState.FAILED and self.jobs.job_for(host.name) is None:
                await self.jobs.host_failed(host, now)

    async def run(self) -> None:
        """Runs the detector loop and the job executor until stop()."""
        await self.start()
        last_refresh = self.clock.now()
        try:
            while not self._stopping.is_set():
                try:
                    last_refresh = await self._iteration(last_refresh)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("detector loop iteration failed")
                await self.clock.sleep(self.settings.detector_tick_s)
        finally:
            await self._shutdown()

    async def _iteration(self, last_refresh: float) -> float:
        now = self.clock.now()
        if now - last_refresh >= self.settings.store_refresh_s:
            self.cluster.refresh()
            last_refresh = now
        was_blocked = {s: self.monitor.blocked(s) for s in self.cluster.segments}
        await self.monitor.tick()
        await self.monitor.hand_over_failed()
        if any(self.monitor.blocked(s) != b for s, b in was_blocked.items()):
            self.jobs.poke()
        await self._enable_returned()
        return last_refresh

    async def _enable_returned(self) -> None:
        while self.monitor.pending_enable:
            name = self.monitor.pending_enable.pop()
            try:
                await self.cloud.enable_host(name)
            except VmhaError as exc:
                log.warning("could not re-enable host %s: %s", name, exc)

    async def stop(self) -> None:
        self._stopping.set()
        await self._shutdown()

    async def _shutdown(self) -> None:
        for task in list(self.monitor.confirming.values()):
            task.cancel()
        await self.jobs.stop()
        await self.instances.stop()
        await self.launcher.stop()
        await self.actions.stop()
        await self.decisions.stop()

    async def _host_failed(self, host: Host, now: float) -> None:
        await self.jobs.host_failed(host, now)

    # -- inputs ----------------------------------------------------------------

    def heartbeat(self, host: str, seq: int, sent_at: float) -> None:
        """A heartbeat from `host`'s agent was received now. Cheap, sync."""
        self.monitor.heartbeat(host, seq, sent_at, self.clock.now())

    async def instance_event(self, instance_id: str, kind: str, detail: str = "") -> None:
        """From an agent: started, stopped, crashed, watchdog, app_failed, app_ok."""
        await self.instances.event(instance_id, kind, detail)

    def launch(self, instance_id: str) -> None:
        """Define and start a new instance that has a spec (libvirt mode)."""
        self.launcher.launch(instance_id)

    async def domain_event(self, host: str, instance_id: str, kind: str, detail: str = "",
                           requested: bool = False) -> bool:
        """A domain event from `host`'s hypervisor (libvirt mode). Events of
        instances recorded on another host are ignored (a late report from a
        host the instance has left); stops, resets and reboots that vmha or
        a user asked for, and the stop that follows a `poweroff` watchdog
        action, are not failures. True if it was acted on."""
        inst = self.cluster.get_instance(instance_id)
        if inst is None or inst.host != host:
            where = "unknown" if inst is None else f"recorded on {inst.host}"
            log.info("domain event %s of instance %s from %s ignored: %s", kind, instance_id,
                     host, where)
            return False
        # A stop of a guest already recorded stopped (its watchdog's `poweroff`
        # action, reported just before) is the chosen recovery, not a failure.
        settled = kind == "stopped" and inst.state is InstanceState.STOPPED
        if requested or settled or kind not in DOMAIN_EVENT_KINDS:
            log.debug("domain event %s of %s on %s: nothing to do", kind, inst.name, host)
            return False
        await self.instances.event(instance_id, kind, detail)
        return True

    async def fence_ack(self, host: str, who: str, force: bool = False) -> None:
        """An operator confirms `host` is powered off (manual fence). Refused
        (Conflict) while its heartbeats are current or a peer still reaches
        it, unless `force`; every ack is recorded as `host.fence_acked`."""
        self._require_host(host)
        alive = await fencing.still_answers(self.monitor, host, self.clock.now())
        if alive and not force:
            raise Conflict(f"refusing fence-ack of host {host}: {alive}, so it may still "
                           "run its instances and they would run twice; check that it is "
                           "really powered off, then repeat with force (--force)")
        now = self.clock.now()
        current = self.cluster.hosts[host]
        self.cluster.append([fencing.ack_event(current, who, force, alive, now)])
        if self.jobs.job_for(host) is None and current.state in (
            HostState.SUSPECT, HostState.PARTITIONED
        ):
            failed = self.cluster.move_host(
                host, HostState.FAILED, f"operator {who} acknowledged it is off", now)
            if failed is not None:
                self.jobs.acks[host] = who
                await self.jobs.host_failed(failed, now)
        elif self.jobs.job_for(host) is not None:
            self.jobs.acks[host] = who
        self.jobs.poke()
        await self.cluster.flush()

    async def fence_host(self, host: str, who: str, method: str | None = None) -> Job:
        """An operator's power-off of `host` through its power fence levels
        (or only `method`), run as the host's recovery job: the fence is the
        job's fence confirmation, and its instances are then recovered."""
        self._require_host(host)
        current = self.cluster.hosts[host]
        levels = fencing.operator_levels(current, method, self.settings.default_fence_levels,
                                         frozenset(self.jobs.fencers))
        job = self.jobs.job_for(host)
        if job is not None:
            if recovery.fence_confirmed(job):
                raise Conflict(f"host {host} is already fenced (job {job.id} is "
                               f"{job.state.value}): nothing to power off")
            self.jobs.requests[host] = (who, levels)
            self.jobs.start(job.id)
            self.jobs.poke()
            return job
        failed = fencing.fail_for_fence(self.cluster, current, who, self.clock.now())
        job = await self.jobs.host_failed(failed, self.clock.now(), requested_by=who,
                                          levels=levels)
        await self.cluster.flush()
        return job

    async def set_scheduling(self, host: str, enabled: bool, who: str, reason: str = "") -> None:
        """An operator lets `host` receive instances again (`enabled`) or not,
        through the cloud (Nova's compute service, or vmha's own placement);
        recorded as `host.enabled` / `host.disabled` with who and why."""
        self._require_host(host)
        why = reason or f"{'enabled' if enabled else 'disabled'} by operator {who}"
        call = self.cloud.enable_host(host) if enabled else self.cloud.disable_host(host, why)
        await asyncio.wait_for(call, self.settings.evacuate_timeout_s)
        current = self.cluster.hosts[host]
        self.cluster.append([fencing.scheduling_event(current, enabled, who, why,
                                                      self.clock.now())])
        await self.cluster.flush()

    def _require_host(self, host: str) -> None:
        """NotFound unless `host` exists; one created since the last refresh
        of the cluster is loaded now (operators act on what the API shows)."""
        if host not in self.cluster.hosts:
            self.cluster.refresh()
        if host not in self.cluster.hosts:
            raise NotFound("host", host)

    async def resume_segment(self, segment: str, who: str) -> None:
        if segment not in self.cluster.segments:
            raise NotFound("segment", segment)
        self.monitor.resume(segment, who, self.clock.now())
        self.jobs.poke()
        await self.cluster.flush()

    async def set_maintenance(self, host: str, enabled: bool, reason: str = "") -> None:
        if host not in self.cluster.hosts:
            raise NotFound("host", host)
        now = self.clock.now()
        current = self.cluster.hosts[host]
        if enabled and current.state is not HostState.MAINTENANCE:
            why = reason or "maintenance requested"
            moved = self.cluster.move_host(host, HostState.MAINTENANCE, why, now)
            if moved is not None:
                self.cluster.save_host(replace(moved, maintenance=True))
        elif not enabled and current.state is HostState.MAINTENANCE:
            why = reason or "maintenance finished"
            moved = self.cluster.move_host(host, HostState.UP, why, now)
            if moved is not None:
                self.cluster.save_host(replace(moved, maintenance=False))
            self.monitor.detector(host).last_arrival = now  # fresh grace period
            self.monitor.healthy_since.pop(host, None)
        await self.cluster.flush()

    # -- custom recovery: actions and decisions -----------------------------------

    async def instance_action(self, instance_id: str, action: str, target: str | None,
                              who: str) -> Job:
        """Start `action` on an instance as a job (Conflict says why not)."""
        job = self.actions.submit(instance_id, action, target, who)
        self.decisions.superseded(job)
        await self.cluster.flush()
        return job

    async def decide(self, token: str, action: str, who: str,
                     project: str | None = None) -> tuple[Job, Job | None]:
        """Answer a custom decision: (the decision job, the action job)."""
        return await self.decisions.answer(token, action, who, project)

    def _ask(self, instance: Instance, layer: str, reason: str) -> None:
        host = self.cluster.hosts.get(instance.host or "")
        policy = self.cluster.policy_of(instance, host)
        self.decisions.request(decisions.Request(instance, layer, reason), policy)

    def _ask_after_fence(self, job: Job, instance_ids: tuple[str, ...]) -> None:
        host = self.cluster.hosts.get(job.subject)
        for iid in instance_ids:
            inst = self.cluster.get_instance(iid)
            if inst is None or inst.host != job.subject:
                continue
            fenced_by = job.data["fence"]["confirmed_by"]
            reason = f"host {job.subject} failed and was fenced ({fenced_by})"
            self.decisions.request(decisions.Request(inst, "host", reason, job.subject, job.id),
                                   self.cluster.policy_of(inst, host))

    def _moving(self, instance: Instance) -> str:
        """The host-recovery job moving `instance` right now, or ""."""
        job = self.jobs.job_for(instance.host or "")
        if job is None:
            return ""
        sub = recovery.subs_of(job).get(instance.id)
        return job.id if sub is not None and sub["state"] not in recovery.DONE_STATES else ""

    # -- for the simulator and tests --------------------------------------------

    def restarts(self, instance_id: str) -> int:
        """Restarts of `instance_id` within its current budget window."""
        return self.instances.restarts(instance_id)

    @property
    def isolated(self) -> bool:
        return self.monitor.isolated

    def paused_segments(self) -> frozenset[str]:
        return frozenset(self.monitor.paused)
