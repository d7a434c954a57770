"""The running controller service: API + engine + heartbeat receiver.

`vmha serve` builds a `Service` and hands its app to uvicorn; the app's
lifespan starts, on uvicorn's event loop:
- the engine's `Controller` (detector loop, confirmation rounds, recovery
  jobs) on the shared store and clock;
- the UDP heartbeat receiver (`[heartbeat] listen`), whose accepted
  heartbeats feed `Controller.heartbeat` and are acked to the agents;
- the webhook dispatcher (`vmha.adapters.bus.dispatcher`, `[events]`),
  which delivers the outbox to every subscription;
- a small cache of the agents' heartbeat secrets, refreshed from the store
  in the background (and at once when an unknown host sends), so the
  receiver's hot path never waits on the database.

This module is the composition root: the only place that picks the real
adapters. Power fencing uses the `[bmcs.*]` entries (IPMI and Redfish,
vmha.cli.fencers); the cloud adapters are wired here as their issues land,
until then instance operations report that no cloud adapter is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from vmha.adapters.bus.amqp import (
    AMQP_SUBSCRIPTION,
    OsloPublisher,
    RoutingSender,
    amqp_subscription,
)
from vmha.adapters.bus.dispatcher import Dispatcher, DispatchSettings
from vmha.adapters.bus.webhook import WebhookSender
from vmha.adapters.cloud.libvirt import LibvirtCloud, domain_uuid
from vmha.adapters.cloud.none import NoCloud
from vmha.adapters.fencing.secrets import KEY_ENV, load_box
from vmha.adapters.heartbeat import start_receiver
from vmha.adapters.peer.http import HttpPeerProber
from vmha.api.context import DomainReport, Liveness
from vmha.api.routes.stream import close_streams
from vmha.cli.fencers import build_fencers
from vmha.config import EventsConfig, Settings, controller_settings
from vmha.domain.errors import NotFound, VmhaError
from vmha.domain.model import Instance, Job
from vmha.domain.policy import HAPolicy
from vmha.engine.controller import Controller
from vmha.ports import Clock, Cloud, Fencer, IdGen, Store

log = logging.getLogger("vmha.serve")

SECRETS_REFRESH_S = 5.0
SECRETS_MIN_GAP_S = 0.5  # at most two store reads a second for unknown hosts


class AgentSecrets:
    """Heartbeat secrets by host name, cached from the store's agent records."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, bytes] = {}
        self._wanted = asyncio.Event()

    def lookup(self, host: str) -> bytes | None:
        secret = self._cache.get(host)
        if secret is None:
            self._wanted.set()  # maybe it registered a moment ago
        return secret

    def reload(self) -> None:
        self._cache = {a.host: a.secret.encode() for a in self._store.list_agents()}

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.reload)
            except VmhaError as exc:
                log.warning("cannot refresh agent secrets: %s", exc.detail)
            self._wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), SECRETS_REFRESH_S)
            await asyncio.sleep(SECRETS_MIN_GAP_S)


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
        checkpoint_s=events.checkpoint_s,
        max_attempts=events.max_attempts, backoff_initial_s=events.backoff_initial_s,
        backoff_max_s=events.backoff_max_s, jitter=events.backoff_jitter,
    )


class Service:
    """The parts of one controller process, started by the app's lifespan."""

    def __init__(self, settings: Settings, store: Store, clock: Clock, ids: IdGen,
                 app: FastAPI) -> None:
        self.settings = settings
        self.store = store
        self.app = app
        self.prober = HttpPeerProber(store)
        self.bmc_box = load_box(settings.fencing.secret_key_file, os.environ.get(KEY_ENV))
        self.fencers = build_fencers(settings, self._bmc_of, store, self.bmc_box)
        self.libvirt: LibvirtCloud | None = None
        cloud: Cloud = NoCloud()
        if settings.cloud.adapter == "libvirt":
            cfg = settings.cloud
            self.libvirt = cloud = LibvirtCloud(
                store, self._policy_of, cfg.image_dir, cfg.request_timeout_s,
                cfg.health_timeout_s)
        self.engine = Controller(
            controller_settings(settings), store, clock, ids,
            fencers=self.fencers, cloud=cloud, prober=self.prober,
        )
        self.secrets = AgentSecrets(store)
        ev = settings.events
        webhooks = WebhookSender(clock, timeout_s=ev.timeout_s, source=ev.source,
                                 allow_private=ev.allow_private_destinations)
        amqp_url = ev.amqp_url.get_secret_value()
        self.amqp = OsloPublisher(
            amqp_url, exchange=ev.amqp_exchange, topic=ev.amqp_topic,
            publisher_id=ev.amqp_publisher_id,
        ) if amqp_url else None
        self.sender = RoutingSender(webhooks, self.amqp)
        self.dispatcher = Dispatcher(store, clock, self.sender, dispatch_settings(ev),
                                     random.Random())
        self.receiver: Any = None
        self.clock = clock
        app.router.lifespan_context = self.lifespan
        app.state.vmha.liveness = self.liveness
        app.state.vmha.operations = self
        app.state.vmha.bmc_box = self.bmc_box
        app.state.vmha.inbox = self
        if self.libvirt is not None:
            app.state.vmha.launcher = self.engine

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

    async def power_status(self, host: str) -> dict[str, str]:
        """Every power method's reading of `host` (operators' power-status)."""
        known = self.engine.cluster.hosts.get(host)
        target = known if known is not None else await asyncio.to_thread(
            self.store.get_host, host)

        async def read(fencer: Fencer) -> str:
            try:
                return (await fencer.power_status(target)).value
            except VmhaError as exc:
                return f"error: {exc.detail}"

        methods = sorted(self.fencers)
        readings = await asyncio.gather(*(read(self.fencers[m]) for m in methods))
        return dict(zip(methods, readings, strict=True))

    async def fence_ack(self, host: str, who: str, force: bool = False) -> None:
        await self.engine.fence_ack(host, who, force)

    async def fence_host(self, host: str, who: str, method: str | None) -> Job:
        return await self.engine.fence_host(host, who, method)

    async def set_scheduling(self, host: str, enabled: bool, who: str, reason: str) -> None:
        await self.engine.set_scheduling(host, enabled, who, reason)

    def _policy_of(self, instance: Instance) -> HAPolicy:
        cluster = self.engine.cluster
        return cluster.policy_of(instance, cluster.hosts.get(instance.host or ""))

    def _instance_ids(self) -> dict[str, str]:
        """Domain UUID -> instance id, for the instances the engine knows."""
        return {domain_uuid(i.id): i.id for i in self.engine.cluster.instances()}

    async def domain_events(self, host: str, events: Sequence[DomainReport]) -> int:
        """Agents' domain events, in order, to the engine (libvirt mode)."""
        ids = self._instance_ids()
        known = 0
        for ev in events:
            iid = ids.get(ev.domain)
            if iid is None:
                log.info("domain event %s of unknown domain %s (%s) on %s ignored", ev.kind,
                         ev.name, ev.domain, host)
                continue
            known += 1
            await self.engine.domain_event(host, iid, ev.kind, ev.detail, ev.requested)
        return known

    async def domain_inventory(self, host: str, domains: Sequence[Mapping[str, str]]) -> None:
        """A host's domains. One that runs there while its instance is recorded
        on another host is logged loudly (vmha never starts it there: the
        record is the truth); definitions left behind by instances that moved
        away (a host back from a power-off) stay, shut off and harmless."""
        ids = self._instance_ids()
        for dom in domains:
            iid = ids.get(dom["uuid"])
            inst = self.engine.cluster.get_instance(iid) if iid else None
            if inst is None or inst.host in (None, host):
                continue
            if dom["state"] in ("running", "paused", "crashed"):
                log.error("instance %s is recorded on %s but %s reports its domain %s; "
                          "check both hosts before anything else", inst.name, inst.host, host,
                          dom["state"])

    async def instance_action(self, instance_id: str, action: str, target: str | None,
                              who: str) -> Job:
        return await self.engine.instance_action(instance_id, action, target, who)

    async def decide(self, token: str, action: str, who: str,
                     project: str | None = None) -> tuple[Job, Job | None]:
        return await self.engine.decide(token, action, who, project)

    def _bmc_of(self, host: str) -> str:
        """The `[bmcs.<name>]` entry of a host: its `bmc` field, else its name."""
        known = self.engine.cluster.hosts.get(host)
        return (known.bmc if known is not None and known.bmc else None) or host

    def liveness(self) -> dict[str, Liveness]:
        """Heartbeat age and phi of every host the detector has heard."""
        now = self.clock.now()
        out = {}
        for name, det in list(self.engine.monitor.detectors.items()):
            age = None if det.last_arrival is None else max(0.0, now - det.last_arrival)
            out[name] = Liveness(heartbeat_age_s=age, phi=round(det.phi(now), 2))
        return out

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self.secrets.run(), name="agent-secrets")]
        transport = None
        if self.settings.heartbeat.enabled:
            hb = self.settings.heartbeat
            transport, self.receiver = await start_receiver(
                self.secrets.lookup, self.engine.heartbeat, hb.host, hb.port
            )
            log.info("heartbeats: listening on %s/udp", hb.listen)
        tasks.append(asyncio.create_task(self.engine.run(), name="engine"))
        if self.settings.events.dispatcher:
            try:
                await asyncio.to_thread(self.ensure_amqp_subscription)
            except VmhaError as exc:
                log.warning("cannot set up AMQP publishing: %s", exc.detail)
            tasks.append(asyncio.create_task(self.dispatcher.run(), name="webhooks"))
        try:
            with on_exit_signals(lambda: close_streams(self.app)):
                yield
        finally:
            close_streams(self.app)
            await self.dispatcher.stop()
            await self.engine.stop()
            if transport is not None:
                transport.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.prober.aclose()
            if self.libvirt is not None:
                await self.libvirt.aclose()
            await self.sender.aclose()

    def close(self) -> None:
        self.store.close()
