"""The running controller service: API + engine + heartbeat receiver.

`vmha.controller.compose` builds a `Service` for `vmha serve`, which hands
its app to uvicorn; the app's lifespan starts, on uvicorn's event loop:
- the `Engine` (detector loop, confirmation rounds, recovery jobs) on the
  shared store and clock, draining the controller's inbox
  (vmha.controller.inbox: the API's and the agents' commands);
- the UDP heartbeat intake (`[heartbeat] listen`): a worker process of
  its own reads, verifies and acks the agents' heartbeats; the engine
  pulls them on every detector tick (vmha.adapters.heartbeat.intake);
- the webhook dispatcher (`vmha.adapters.bus.dispatcher`, `[events]`),
  which delivers the outbox to every subscription;
- a small cache of the agents' heartbeat secrets, refreshed from the store
  in the background (and soon when an unknown host sends) and handed to
  the intake's worker, whose hot path never waits on the database.

This module is the composition root: the only place that picks the real
adapters. Power fencing uses the `[bmcs.*]` entries (IPMI and Redfish,
vmha.controller.fencers); the cloud is `[cloud] adapter`: libvirt (the hosts'
agents), openstack (Nova, logged in by `vmha serve` before it starts, with
its inventory sync, vmha.controller.openstack) or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI

from vmha.adapters.bus.amqp import (
    AMQP_SUBSCRIPTION,
    OsloPublisher,
    RoutingSender,
    amqp_subscription,
)
from vmha.adapters.bus.dispatcher import Dispatcher, DispatchSettings
from vmha.adapters.bus.local import LocalBus
from vmha.adapters.bus.webhook import WebhookSender
from vmha.adapters.cloud.libvirt import LibvirtCloud
from vmha.adapters.cloud.none import NoCloud
from vmha.adapters.cloud.openstack import OpenStackCloud
from vmha.adapters.coord import build_coordinator
from vmha.adapters.fencing.secrets import KEY_ENV, SecretBox, load_box
from vmha.adapters.heartbeat.intake import HeartbeatIntake, IntakeSettings
from vmha.adapters.heartbeat.receiver import REASONS
from vmha.adapters.peer.http import HttpPeerProber
from vmha.adapters.sdnotify import SdNotifier
from vmha.api.context import Liveness
from vmha.api.forward import LeaderForward
from vmha.api.metrics import ControllerMetrics
from vmha.api.metrics import install as install_metrics
from vmha.api.routes.stream import close_streams
from vmha.config import EventsConfig, Settings, controller_settings
from vmha.controller.authority import Authority, guarded
from vmha.controller.fencers import build_fencers
from vmha.controller.hostview import EngineHostView
from vmha.controller.inbox import Inbox
from vmha.controller.leadership import Leadership
from vmha.controller.openstack import InventorySync, build_openstack
from vmha.domain.detector import PhiDetector
from vmha.domain.errors import NotFound, VmhaError
from vmha.domain.handover import Hearing, HoldDown, abstains, better
from vmha.domain.model import Instance
from vmha.domain.policy import HAPolicy
from vmha.domain.ring import Ring
from vmha.engine import Engine
from vmha.engine.shard import REFRESH_S, ShardReport, ShardView, ShardWatch, witness_of
from vmha.ports import Clock, Cloud, ControllerInfo, Fencer, IdGen, Store

log = logging.getLogger("vmha.serve")

SECRETS_REFRESH_S = 5.0
SECRETS_MIN_GAP_S = 0.5  # at most two store reads a second for unknown hosts
SHARD_TICK_S = 0.5  # a follower judges its share (and reads the others' reports) this often


class AgentSecrets:
    """Heartbeat secrets by host name, read from the store's agent records
    and handed to the heartbeat intake (whose worker verifies with them):
    again every SECRETS_REFRESH_S when they changed, soon (within
    SECRETS_MIN_GAP_S) when an unknown host sent (`missing`, called from
    the intake's collecting thread), and at once for a registration through this
    process's API (`learn`)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, bytes] = {}
        self._missed = False
        self._marks: dict[str, int] | None = None  # the store's agent_marks at the last read
        self.intake: HeartbeatIntake | None = None

    def attach(self, intake: HeartbeatIntake) -> None:
        self.intake = intake
        intake.set_secrets(self._cache)

    def hosts(self) -> Mapping[str, bytes]:
        """Every registered agent's host (the mapping is replaced, never
        changed in place: the same object means the same hosts)."""
        return self._cache

    def missing(self) -> None:
        self._missed = True  # maybe it registered a moment ago

    def learn(self, registered: Sequence[tuple[str, str]]) -> None:
        learned = {host: secret.encode() for host, secret in registered}
        self._cache = {**self._cache, **learned}
        if self.intake is not None:
            self.intake.learn(learned)

    def reload(self) -> None:
        """Read every agent's secret again, if any was written since the last
        read: opening 10,000 agents' records took ~0.1 s of the GIL every
        SECRETS_REFRESH_S (issue 18); their marks take a tenth of that."""
        marks = self._store.agent_marks()
        if marks == self._marks:
            return
        fresh = {a.host: a.secret.encode() for a in self._store.list_agents()}
        self._marks = marks  # read before the records: a write between reads them again
        if fresh != self._cache:
            self._cache = fresh
            if self.intake is not None:
                self.intake.set_secrets(fresh)

    async def run(self) -> None:
        while True:
            self._missed = False
            try:
                await asyncio.to_thread(self.reload)
            except VmhaError as exc:
                log.warning("cannot refresh agent secrets: %s", exc.detail)
            waited = 0.0
            while waited < SECRETS_REFRESH_S and not self._missed:
                await asyncio.sleep(SECRETS_MIN_GAP_S)
                waited += SECRETS_MIN_GAP_S


@contextlib.contextmanager
def on_exit_signals(callback: Callable[[], None]) -> Iterator[None]:
    """Also call `callback` on SIGINT/SIGTERM, then the handler already set
    (uvicorn's, which starts its shutdown). Why: uvicorn waits for open
    responses before it runs the app's shutdown, so long-lived SSE streams
    must learn about the signal itself to end. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def chained(sig: int, frame: Any) -> None:
        callback()
        handler = previous.get(sig)
        if callable(handler):
            handler(sig, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, chained)
    try:
        yield
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is chained:
                signal.signal(number, handler)


def dispatch_settings(events: EventsConfig) -> DispatchSettings:
    return DispatchSettings(
        poll_s=events.poll_interval_s, refresh_s=events.refresh_s,
        checkpoint_s=events.checkpoint_s, pipeline=events.pipeline,
        max_attempts=events.max_attempts, backoff_initial_s=events.backoff_initial_s,
        backoff_max_s=events.backoff_max_s, jitter=events.backoff_jitter,
    )


class Service:
    """The parts of one controller process, started by the app's lifespan."""

    def __init__(self, settings: Settings, store: Store, clock: Clock, ids: IdGen,
                 app: FastAPI, *, bmc_box: SecretBox | None = None,
                 heartbeat_socket: socket.socket | None = None,
                 openstack: OpenStackCloud | None = None) -> None:
        self.settings = settings
        self.store = store
        self.app = app
        self.prober = HttpPeerProber(store)
        self.bmc_box = bmc_box if bmc_box is not None else load_box(
            settings.fencing.secret_key_file, os.environ.get(KEY_ENV))
        self.heartbeat_socket = heartbeat_socket  # bound by `vmha serve` before start
        self.fencers = build_fencers(settings, self._bmc_of, store, self.bmc_box)
        self.libvirt: LibvirtCloud | None = None
        self.inventory: InventorySync | None = None
        cloud: Cloud = NoCloud()
        if settings.cloud.adapter == "libvirt":
            cfg = settings.cloud
            self.libvirt = cloud = LibvirtCloud(
                store, self._policy_of, cfg.image_dir, cfg.request_timeout_s,
                cfg.health_timeout_s)
        elif settings.cloud.adapter == "openstack":  # logged in by `vmha serve` at start
            cloud = openstack or build_openstack(settings.openstack)
        self.secrets = AgentSecrets(store)
        self.intake: HeartbeatIntake | None = None  # bound when the app starts
        self.cloud, self.ids, self.clock = cloud, ids, clock
        # Every commit of this process that stores events wakes the outbox's
        # readers (dispatcher, SSE streams) at once; the engine's fenced
        # views of the store (copies) keep the hook.
        self.bus = LocalBus()
        store.on_commit = self.bus.committed  # type: ignore[attr-defined]
        app.state.vmha.bus = self.bus
        self.inbox = Inbox()
        coord = settings.coordination
        self.name = coord.name or socket.gethostname()
        # Heartbeat sharding (vmha.engine.shard): with several controllers
        # each judges its share; alone (`local`) it judges every host.
        self.sharded = coord.url != "local"
        self.shard_view = ShardView(self.name)
        self.watch = ShardWatch(controller_settings(settings).detector_config())
        self.report = ShardReport()  # this controller's last verdicts, as a follower
        self.hold_down = HoldDown()  # a leader that hears no host hands over
        self._published_at = 0.0
        self._alone = Ring([self.name])
        self._shares: tuple[object, object, dict[str, list[str]]] = (None, None, {})
        self.engine = self._new_engine(store)  # runs once this controller leads
        self.engine_task: asyncio.Task[None] | None = None
        self.leadership = Leadership(
            build_coordinator(coord.url, self.name, coord.lease_s), store, clock,
            coord.round_s(), self._elected, self._deposed)
        if isinstance(cloud, OpenStackCloud):  # its inventory, through this leader's inbox
            self.inventory = InventorySync(cloud.nova, self.inbox, settings.openstack,
                                           lambda: self.leadership.leading)
        ev = settings.events
        webhooks = WebhookSender(clock, timeout_s=ev.timeout_s, source=ev.source,
                                 allow_private=ev.allow_private_destinations)
        amqp_url = ev.amqp_url.get_secret_value()
        self.amqp = OsloPublisher(
            amqp_url, exchange=ev.amqp_exchange, topic=ev.amqp_topic,
            publisher_id=ev.amqp_publisher_id, project_id=ev.amqp_project_id,
            ceilometer_priorities=ev.amqp_priorities == "ceilometer",
        ) if amqp_url else None
        self.sender = RoutingSender(webhooks, self.amqp)
        self.notifier = SdNotifier()  # systemd Type=notify / WatchdogSec=, when run by it
        self.metrics = ControllerMetrics(
            store, clock, settings.metrics.per_host_limit, liveness=self.liveness_all,
            heartbeats=self.heartbeat_counts)
        install_metrics(app, self.metrics)
        self.dispatcher = self._new_dispatcher()
        self.dispatcher_task: asyncio.Task[None] | None = None
        app.router.lifespan_context = self.lifespan
        app.state.vmha.liveness = self.liveness
        app.state.vmha.bmc_box = self.bmc_box
        app.state.vmha.inbox = self.inbox
        app.state.vmha.defines_instances = self.libvirt is not None
        app.state.vmha.can_rebuild = callable(getattr(self.cloud, "rebuild_instance", None))
        app.state.vmha.controller_status = self.controller_status
        app.state.vmha.on_registered = self.secrets.learn
        app.state.vmha.controllers = self.controllers
        # host pages from the leading engine's cache (a follower's: the store)
        self.host_view = EngineHostView(
            store, lambda: self.engine.cluster if self.leadership.leading else None)
        app.state.vmha.hosts = self.host_view
        app.add_middleware(LeaderForward, target=self.forward_target)

    def _new_engine(self, store: Store, authority: Authority | None = None) -> Engine:
        """An engine on `store`; with `authority` (a leader's term), every
        fence and every change of the cloud first checks the lease
        (vmha.controller.authority)."""
        fencers: Mapping[str, Fencer] = self.fencers
        cloud = self.cloud
        if authority is not None:
            fencers, cloud = guarded(self.fencers, self.cloud, authority)
        engine = Engine(controller_settings(self.settings), store, self.clock, self.ids,
                        fencers=fencers, cloud=cloud, prober=self.prober,
                        inbox=self.inbox, heartbeats=self.intake)
        if self.sharded:
            engine.monitor.shard = self.shard_view
        return engine

    def _new_dispatcher(self) -> Dispatcher:
        dispatcher = Dispatcher(self.store, self.clock, self.sender,
                                dispatch_settings(self.settings.events), random.Random(),
                                bus=self.bus)
        dispatcher.on_delivery = self.metrics.delivered
        return dispatcher

    async def _elected(self, epoch: int) -> None:
        """This controller leads: a new inbox and engine whose writes are
        fenced with `epoch`, and (the one sender across controllers) the
        webhook dispatcher. Jobs resume from their last durable step."""
        if self.inbox.closed:  # the last term's; a first term keeps what waits
            self.inbox = self.app.state.vmha.inbox = Inbox()
            if self.inventory is not None:
                self.inventory.inbox = self.inbox
        self.engine = self._new_engine(self.store.fenced(epoch), self.leadership.authority)
        if self.sharded:  # it heard every heartbeat as a follower: no fresh warm-up
            self.engine.monitor.adopt(self.watch.detectors, self.watch.lost_until)
        self.hold_down.reset()
        self.engine_task = asyncio.create_task(self.engine.run(), name="engine")
        if self.settings.events.dispatcher:
            self.dispatcher = self._new_dispatcher()
            try:
                await asyncio.to_thread(self.ensure_amqp_subscription)
            except VmhaError as exc:
                log.warning("cannot set up AMQP publishing: %s", exc.detail)
            self.dispatcher_task = asyncio.create_task(self.dispatcher.run(), name="webhooks")

    async def _deposed(self) -> None:
        """Stop acting at once: the engine (its inbox refuses what waits,
        503) and the dispatcher; heartbeats are only drained from now on."""
        await self.dispatcher.stop()
        await self.engine.stop()
        for task in (self.engine_task, self.dispatcher_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.engine_task = self.dispatcher_task = None
        # a follower again: it judges its share from where the engine's detectors are
        old = self.engine.monitor
        self.watch = ShardWatch(controller_settings(self.settings).detector_config())
        self.watch.adopt(old.detectors, old.heard_until, old.lost_until)
        self.engine = self._new_engine(self.store)  # idle: the stopped one's load is history

    async def _watch_share(self) -> None:
        """Every SHARD_TICK_S: the ring and the others' reports from the last
        round go to the leader's detector (`shard_view`); a follower judges
        its share with the heartbeats it received and publishes its verdicts
        with its membership record. A follower without sharding (`local`:
        it never is one) would only drain its intake."""
        while True:
            await asyncio.sleep(SHARD_TICK_S)
            try:
                handover = self._shard_round()
                if handover:
                    await self.leadership.hand_over(handover)
            except Exception:
                log.exception("judging this controller's share of the hosts failed")

    def _shard_round(self) -> str:
        """One tick of the share's judging; returns why this leader hands
        leadership over now ("" it does not: vmha.domain.handover)."""
        view = self.leadership.view
        reports = {}
        for member in view.members:
            report = ShardReport.from_json(member.report)
            if report is not None:
                reports[member.name] = report
        self.shard_view.update([m.name for m in view.members], reports, self.clock.now())
        if self.leadership.leading:
            if not self.report.same(ShardReport()):  # the engine judges now
                self.report = ShardReport(seq=self.report.seq)
                self.leadership.coordinator.report("")
            return self._deaf_leader() if self.sharded else ""
        self.hold_down.reset()
        batch = self.intake.take() if self.intake is not None else None
        if not self.sharded:
            return ""
        now = self.clock.now()
        if batch is not None:
            self.watch.apply(batch, now)
        hosts = self.secrets.hosts()
        hearing = Hearing(self.name, self.watch.hears(hosts, now), len(hosts))
        others = self.shard_view.hearings()
        if abstains(hearing, others):
            self.leadership.abstain(True, f"{hearing}, {better(hearing, others)}")
        else:
            self.leadership.abstain(False, f"{hearing}" if not hearing.deaf else
                                    "no other controller reports hearing the hosts")
        self._publish(hearing, now)
        return ""

    def _deaf_leader(self) -> str:
        """The leader's hold-down: why it hands over now, or ""."""
        hosts, now = self.secrets.hosts(), self.clock.now()
        hears = self.engine.monitor.hears(hosts, now)
        if hears is None:  # its kernel dropped heartbeats: its load, not deafness
            self.hold_down.reset()
            return ""
        decision = self.hold_down.observe(Hearing(self.name, hears, len(hosts)),
                                          self.shard_view.hearings(), now)
        if decision.started:
            log.warning("controller %s leads but %s; it hands leadership over in %g s unless "
                        "it hears them again", self.name, decision.reason,
                        self.hold_down.hold_s)
        return decision.reason if decision.resign else ""

    def _publish(self, hearing: Hearing, now: float) -> None:
        """This follower's verdicts on its share, and how many hosts it hears."""
        ring, leader = self.shard_view.ring, self.leadership.view.leader
        # the first other member by name also judges the leader's share: a
        # leader cut off from the hosts then needs its word to suspect them
        witness_for = leader if leader in ring.members and \
            witness_of(ring.members, leader) == self.name else ""
        witnessed = self.shares().get(witness_for, []) if witness_for else []
        report = replace(self.watch.report(ring.members, self.owned_hosts(), now, witnessed,
                                           witness_for or ""),
                         hears=hearing.hears, hosts=hearing.hosts)
        changed = not report.same(self.report)
        if changed or now - self._published_at >= REFRESH_S:
            if changed:
                self._log_verdicts(self.report, report, now)
            self.report = replace(report, seq=self.report.seq + 1)
            self._published_at = now
            self.leadership.coordinator.report(self.report.to_json())

    def shares(self) -> dict[str, list[str]]:
        """Every member's share of the registered hosts (sorted), worked out
        again only when the ring or the hosts changed. Alone: all of them."""
        ring = self.shard_view.ring if self.sharded else self._alone
        hosts = self.secrets.hosts()
        if self._shares[0] is not ring or self._shares[1] is not hosts:
            self._shares = (ring, hosts, ring.shares(hosts))
            self.watch.forget(hosts)
        return self._shares[2]

    def owned_hosts(self) -> list[str]:
        return self.shares().get(self.name, [])

    def _log_verdicts(self, old: ShardReport, new: ShardReport, now: float) -> None:
        went, came = sorted(set(new.silent) - set(old.silent)), sorted(
            set(old.silent) - set(new.silent))
        if len(went) + len(came) > 20:
            log.warning("share of %d hosts: %d silent (%d more, %d heard again); reported "
                        "to the leader", new.owned, len(new.silent), len(went), len(came))
            return
        for host in went:
            log.info("host %s silent for %.1f s (this controller's share); reported to the "
                     "leader", host, now - new.silent[host])
        for host in came:
            log.info("host %s heard again (this controller's share)", host)

    def forward_target(self) -> str | None:
        """Where the API's changing calls go (vmha.api.forward): None to
        this controller (it leads, or it is the only one), the leader's API
        URL, or "" when no controller leads."""
        if self.leadership.leading or self.settings.coordination.url == "local":
            return None
        view = self.leadership.view
        leader = next((m for m in view.members if m.name == view.leader), None)
        return leader.api_url if leader is not None and view.healthy else ""

    def controllers(self) -> dict[str, Any]:
        """The controllers' group as this one sees it (GET /v1/controllers)."""
        lead, view = self.leadership, self.leadership.view
        return {
            "self": self.name, "coordination": self.settings.coordination.url.split("://")[0],
            "healthy": view.healthy, "error": view.error, "leader": view.leader,
            "epoch": lead.epoch, "lease_s": view.lease_s,
            "round_age_s": round(max(0.0, time.monotonic() - lead.viewed_at), 3)
            if lead.viewed_at else None,
            "members": [self._member(m, view.leader) for m in view.members],
            "silent": sorted(self.report.silent),
        }

    def _member(self, m: ControllerInfo, leader: str | None) -> dict[str, Any]:
        """A member of the group, with its share of the registered hosts
        and (from its last report) how many of them it hears no longer."""
        owned = len(self.shares().get(m.name, ()))
        report = self.report if m.name == self.name else ShardReport.from_json(m.report)
        silent = None if m.name == leader or report is None else len(report.silent)
        return {"name": m.name, "api_url": m.api_url, "heartbeat": m.heartbeat,
                "leader": m.name == leader, "owned_hosts": owned, "silent_hosts": silent}

    def _start_intake(self) -> None:
        """Bind the heartbeat socket (unless `vmha serve` bound it already),
        start its worker process, feed the engine."""
        hb = self.settings.heartbeat
        if not hb.enabled:
            return
        self.intake = HeartbeatIntake(
            IntakeSettings(hb.host, hb.port, hb.receive_buffer_bytes), self.heartbeat_socket,
            on_unknown=self.secrets.missing)
        self.intake.start()
        self.secrets.attach(self.intake)
        log.info("heartbeats: listening on %s/udp (receive buffer %d KiB)", hb.listen,
                 self.intake.receive_buffer_bytes // 1024)

    def heartbeat_counts(self) -> dict[str, int]:
        """Heartbeats accepted and dropped by reason, for the metrics: the
        receiver's reasons and `kernel_buffer_full` (the socket's drops)."""
        stats = self.intake.stats() if self.intake is not None else {}
        counts = {k: stats[k] for k in REASONS if k in stats}
        if "kernel_drops" in stats:
            counts["kernel_buffer_full"] = stats["kernel_drops"]
        return counts

    def controller_status(self) -> dict[str, Any]:
        """The engine's load and the heartbeat intake's counters (the API's
        `GET /v1/controller`, `/readyz` and metrics read this)."""
        status = self.engine.intake.status(self.clock.now())
        if self.intake is not None:  # a follower's idle engine has no source: ask the intake
            status["heartbeats"] = dict(self.intake.stats())
        return {"hosts_watched": len(self._detectors()), **status}

    def ensure_amqp_subscription(self) -> None:
        """The internal subscription whose cursor drives AMQP publishing:
        made when AMQP is configured (starting with new events), removed
        when it no longer is (or its events would pile up as dead letters)."""
        ev = self.settings.events
        try:
            self.store.get_subscription(AMQP_SUBSCRIPTION)
            exists = True
        except NotFound:
            exists = False
        if self.amqp is not None and not exists:
            self.store.create_subscription(amqp_subscription(
                ev.amqp_exchange, ev.amqp_topic, self.store.last_event_id(), self.clock.now()))
        elif self.amqp is None and exists:
            log.warning("AMQP publishing is off ([events] amqp_url empty): "
                        "dropping its stored cursor")
            self.store.delete_subscription(AMQP_SUBSCRIPTION)

    async def _policy_of(self, instance: Instance) -> HAPolicy:
        cluster = self.engine.cluster
        return await cluster.policy_of(instance, cluster.hosts.get(instance.host or ""))

    def _bmc_of(self, host: str) -> str:
        """The `[bmcs.<name>]` entry of a host: its `bmc` field, else its name."""
        known = self.engine.cluster.hosts.get(host)
        return (known.bmc if known is not None and known.bmc else None) or host

    def _detectors(self) -> Mapping[str, PhiDetector]:
        """The detectors that judge here now: the engine's while this
        controller leads, else its share watch's (which follows every host
        it hears: without a leader, e.g. etcd without quorum, detection
        goes on there)."""
        return self.engine.monitor.detectors if self.leadership.leading \
            else self.watch.detectors

    def liveness(self, host: str) -> Liveness | None:
        """Heartbeat age and phi of `host` as this controller hears it, if
        it follows it. O(1) and safe from the API's worker threads (reads,
        never writes)."""
        det = self._detectors().get(host)
        if det is None:
            return None
        now = self.clock.now()
        last = det.last_arrival
        age = None if last is None else max(0.0, now - last)
        return Liveness(heartbeat_age_s=age, phi=round(det.peek_phi(now), 2))

    def liveness_all(self) -> dict[str, Liveness]:
        """Every followed host's liveness (metrics scrapes: O(hosts) per call)."""
        out = {}
        for name in list(self._detectors()):
            live = self.liveness(name)
            if live is not None:
                out[name] = live
        return out

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self.bus.bind(asyncio.get_running_loop())
        self.host_view.loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self.secrets.run(), name="agent-secrets")]
        self._start_intake()
        self.leadership.join(self._announce())
        tasks.append(asyncio.create_task(self.leadership.run(), name="leadership"))
        tasks.append(asyncio.create_task(self._watch_share(), name="shard-watch"))
        tasks.append(asyncio.create_task(self.metrics.run(self.settings.metrics.poll_s),
                                         name="metrics"))
        if self.inventory is not None:
            tasks.append(asyncio.create_task(self.inventory.run(), name="openstack-inventory"))
        self._notify_ready(tasks)
        try:
            with on_exit_signals(lambda: close_streams(self.app)):
                yield
        finally:
            self.notifier.stopping()
            close_streams(self.app)
            await self.leadership.resign()  # stops the engine and dispatcher first
            if self.intake is not None:
                self.intake.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.prober.aclose()
            if self.libvirt is not None:
                await self.libvirt.aclose()
            await self.sender.aclose()

    def _announce(self) -> ControllerInfo:
        """How the other controllers and the agents reach this one."""
        cfg, hb, api = self.settings.coordination, self.settings.heartbeat, self.settings.api
        return ControllerInfo(self.name, cfg.api_url or f"{api.scheme}://{api.host}:{api.port}",
                              cfg.heartbeat or hb.listen)

    def _notify_ready(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Tell systemd we are up; with WatchdogSec=, ping while the engine runs."""
        self.notifier.ready("controller running")
        interval = self.notifier.ping_interval_s
        if interval is not None:
            running = next(t for t in tasks if t.get_name() == "leadership")
            tasks.append(asyncio.create_task(
                systemd_watchdog(self.notifier, interval, running.done), name="sd-watchdog"))

    def close(self) -> None:
        self.store.close()


async def systemd_watchdog(notifier: SdNotifier, interval_s: float,
                           stopped: Callable[[], bool]) -> None:
    """WATCHDOG=1 every `interval_s` while the event loop runs and `stopped()`
    is false: a blocked loop or a dead main task lets systemd restart us."""
    while not stopped():
        notifier.watchdog()
        await asyncio.sleep(interval_s)
    log.error("the controller's leadership loop stopped: no more systemd watchdog pings")
