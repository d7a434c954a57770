"""Runs the application probes and guest-agent pings of this host's domains.

`Prober` watches every domain that is in the controller's probe document
(`vmha.agent.probes`) and runs on this host. Every probe and guest-agent
heartbeat is an entry of one `Wheel` (one sleeping task for all of them),
on its own fixed grid starting at a random phase within its interval, so
probes spread in time, never wait for each other, and never hold the
heartbeat loop: http/tcp checks are callbacks on a socket, all on the
prober's one `Poller` (`vmha.agent.checks`), exec probes and pings a
task each on `GuestAgent`'s threads, with at most one check in flight
per entry.

Failures during `initial_delay_s` after a domain (re)starts are not counted
(the guest is booting); guest-agent pings count failures only once the
agent answered or connected since the last boot. State changes, and only
those, leave as `DomainEvent`s through `emit` (kinds `app_failed`,
`app_recovered`, `guest_unresponsive`, `guest_responsive`, with the probe,
the last error and the count). Which instances are failed is kept in
`state_dir/probe-state.json`, so a restarted agent still reports the
recovery of an application it had reported failed.

Fed by `vmha.agent.main`: the hypervisor's domain events (`domain_event`),
the inventory (`reconcile`) and the document (`set_document`, from
`vmha.agent.probesync`). It never acts on a domain: the controller decides.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from vmha.agent.checks import Poller, http_target, start_http, start_tcp
from vmha.agent.domains import DomainEvent, DomainView
from vmha.agent.guestagent import GuestAgent, NotRunning
from vmha.agent.probes import AppHealth, PingHealth, ProbeCounts, Report, Watched
from vmha.agent.state import load_json, save_json
from vmha.agent.wheel import Entry, Wheel
from vmha.domain.probes import Probe, ProbeKind, split_command, split_tcp
from vmha.errors import NotFound, VmhaError
from vmha.ports import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_FILE = "probe-state.json"
PING = "guest-ping"
GUEST_CALL_GRACE_S = 1.0  # beyond the check's timeout (libvirt rounds up to seconds)


class Busy(Exception):
    """The previous guest-agent call of this check has not returned yet."""


@dataclass
class _Domain:
    spec: Watched
    boot_at: float
    app: AppHealth
    ping: PingHealth
    channel: bool = False  # has the guest agent channel
    channel_task: asyncio.Task[None] | None = None
    checks: dict[str, Entry] = field(default_factory=dict)  # probe name (or PING) -> entry
    calls: dict[str, asyncio.Future[Any]] = field(default_factory=dict)


class Prober:
    def __init__(self, guest_agent: GuestAgent, clock: Clock,
                 emit: Callable[[DomainEvent], None], state_dir: Path) -> None:
        self._ga = guest_agent
        self._clock = clock
        self._emit = emit
        self._state_dir = state_dir
        self._doc: dict[str, Watched] = {}
        self._running: set[str] = set()
        self._domains: dict[str, _Domain] = {}
        self._wheel = Wheel(clock)
        self.counts = ProbeCounts()  # read by the agent's /v1/metrics
        self._poller: Poller | None = None  # made on the loop by the first http/tcp check
        saved = load_json(state_dir, STATE_FILE)
        known = saved if isinstance(saved, dict) else {}
        self._failed: set[str] = set(known.get("app_failed", []))
        self._unresponsive: set[str] = set(known.get("guest_unresponsive", []))

    # -- inputs -----------------------------------------------------------
    def set_document(self, doc: Mapping[str, Watched]) -> None:
        """The probes of every instance on this host (replaces the last)."""
        self._doc = dict(doc)
        for uuid in list(self._domains):
            if uuid not in self._doc:
                self._unwatch(uuid, forget=True)
            else:
                self._update(self._domains[uuid], self._doc[uuid])
        self._watch_missing()

    def reconcile(self, views: Iterable[DomainView]) -> None:
        """The hypervisor's inventory: watch what runs, stop what does not."""
        self._running = {v.uuid for v in views if v.state == "running"}
        for uuid in list(self._domains):
            if uuid not in self._running:
                self._unwatch(uuid)
        self._watch_missing()

    def domain_event(self, event: DomainEvent) -> None:
        """A hypervisor event (on the loop thread)."""
        uuid, kind = event.uuid, event.kind
        if kind in ("started", "resumed"):
            self._running.add(uuid)
            self._unwatch(uuid)  # a fresh boot: counts and initial delay start again
            self._watch_missing()
        elif kind in ("stopped", "crashed", "paused"):
            self._running.discard(uuid)
            self._unwatch(uuid)
        elif kind == "rebooted" and uuid in self._domains:
            self._rebooted(self._domains[uuid])
        elif kind == "agent_connected" and uuid in self._domains:
            self._domains[uuid].ping.seen = True

    async def close(self) -> None:
        tasks = [d.channel_task for d in self._domains.values() if d.channel_task is not None]
        tasks += [e.running for d in self._domains.values() for e in d.checks.values()
                  if isinstance(e.running, asyncio.Task)]
        for task in tasks:
            task.cancel()
        await self._wheel.close()
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        await asyncio.gather(*tasks, return_exceptions=True)
        self._domains.clear()

    def health(self) -> dict[str, Any]:
        return {"watched": len(self._domains),
                "app_failed": sorted(d.spec.name for d in self._domains.values()
                                     if d.app.failed),
                "guest_unresponsive": sorted(d.spec.name for d in self._domains.values()
                                             if d.ping.unresponsive)}

    # -- watching -----------------------------------------------------------
    def _watch_missing(self) -> None:
        for uuid in self._running & set(self._doc) - set(self._domains):
            spec = self._doc[uuid]
            dom = _Domain(spec, self._clock.now(), AppHealth(failed=uuid in self._failed),
                          PingHealth(unresponsive=uuid in self._unresponsive))
            self._domains[uuid] = dom
            dom.channel_task = asyncio.ensure_future(self._start_checks(dom))
            dom.channel_task.add_done_callback(_log_crash)

    async def _start_checks(self, dom: _Domain) -> None:
        try:
            state = await self._ga.channel(dom.spec.domain)
        except VmhaError as exc:
            log.warning("probes of %s wait: %s", dom.spec.name, exc.detail)
            state = None
        dom.channel = state is not None
        dom.ping.seen = dom.ping.seen or state == "connected"
        self._start_tasks(dom, dom.spec)

    def _start_tasks(self, dom: _Domain, spec: Watched) -> None:
        for probe in spec.probes:
            if probe.name in dom.checks:
                continue
            if probe.kind is ProbeKind.EXEC and not dom.channel:
                log.error("instance %s: exec probe %r cannot run: the domain has no guest "
                          "agent channel", spec.name, probe.target)
                continue
            if probe.kind is ProbeKind.EXEC:
                fire = partial(self._in_task, partial(self._exec_probe, dom, probe))
            else:
                fire = partial(self._socket_probe, dom, probe)
            dom.checks[probe.name] = self._every(probe.interval_s, fire)
        if spec.ping is not None and dom.channel and PING not in dom.checks:
            dom.checks[PING] = self._every(spec.ping.interval_s,
                                          partial(self._in_task, partial(self._ping, dom)))

    def _update(self, dom: _Domain, spec: Watched) -> None:
        old = {p.name: p for p in dom.spec.probes}
        new = {p.name: p for p in spec.probes}
        for name, entry in list(dom.checks.items()):
            changed = name in old and new.get(name) != old[name]
            gone = name == PING and (spec.ping is None or spec.ping != dom.spec.ping)
            if changed or gone or (name in old and name not in new):
                entry.cancel()
                del dom.checks[name]
        dom.spec = spec
        report = dom.app.keep_only(spec.probes)
        if report is not None:
            self._report(dom, report)
        if dom.channel_task is None or dom.channel_task.done():
            self._start_tasks(dom, spec)

    def _unwatch(self, uuid: str, forget: bool = False) -> None:
        dom = self._domains.pop(uuid, None)
        if dom is not None:
            for entry in dom.checks.values():
                entry.cancel()
            if dom.channel_task is not None:
                dom.channel_task.cancel()
        if forget and (uuid in self._failed or uuid in self._unresponsive):
            self._failed.discard(uuid)
            self._unresponsive.discard(uuid)
            self._save()

    def _rebooted(self, dom: _Domain) -> None:
        dom.boot_at = self._clock.now()
        dom.app.restart()
        dom.ping.restart()

    def _every(self, interval_s: float, fire: Callable[[Entry], None]) -> Entry:
        # A random phase within the interval: spread, no thundering herd.
        return self._wheel.add(interval_s, self._clock.now() + random.uniform(0, interval_s),
                               fire)

    @staticmethod
    def _in_task(check: Callable[[], Awaitable[None]], entry: Entry) -> None:
        """Fire a guest-agent check: a task, which ends the entry's run."""
        def ended(task: asyncio.Task[None]) -> None:
            entry.finished()
            _log_crash(task)

        task = asyncio.ensure_future(check())
        entry.running = task
        task.add_done_callback(ended)

    # -- one check ------------------------------------------------------------
    def _socket_probe(self, dom: _Domain, probe: Probe, entry: Entry) -> None:
        """Fire an http or tcp probe: callbacks on a socket, no task."""
        def done(error: str | None) -> None:
            entry.finished()
            self._record(dom, probe, error)

        if self._poller is None:
            self._poller = Poller()
        if probe.kind is ProbeKind.HTTP:
            entry.running = start_http(http_target(probe.target), probe.timeout_s,
                                       probe.expect, done, self._poller)
        else:
            host, port = split_tcp(probe.target)
            entry.running = start_tcp(host, port, probe.timeout_s, done, self._poller)

    async def _exec_probe(self, dom: _Domain, probe: Probe) -> None:
        argv = split_command(probe.target)
        try:
            result = await self._guest_call(dom, probe.name, probe.timeout_s,
                                            lambda: self._ga.run(dom.spec.domain, argv,
                                                                 probe.timeout_s))
        except (NotRunning, NotFound):
            return  # stopped under the check: its stopped event follows
        except (VmhaError, Busy) as exc:
            self._record(dom, probe, exc.detail if isinstance(exc, VmhaError) else str(exc))
            return
        self._record(dom, probe, None if result.ok else result.describe())

    def _record(self, dom: _Domain, probe: Probe, error: str | None) -> None:
        self.counts.checks[probe.kind][error is None] += 1
        counting = self._clock.now() >= dom.boot_at + probe.initial_delay_s
        report = dom.app.record(probe, error is None, error or "", counting)
        if report is not None:
            self._report(dom, report)

    async def _ping(self, dom: _Domain) -> None:
        spec = dom.spec.ping
        if spec is None:
            return
        try:
            await self._guest_call(dom, PING, spec.timeout_s,
                                   lambda: self._ga.ping(dom.spec.domain, spec.timeout_s))
            error = None
        except (NotRunning, NotFound):
            return
        except (VmhaError, Busy) as exc:
            error = exc.detail if isinstance(exc, VmhaError) else str(exc)
        self.counts.pings[error is None] += 1
        report = dom.ping.record(spec, error is None, error or "")
        if report is not None:
            self._report(dom, report)

    async def _guest_call(self, dom: _Domain, key: str, timeout_s: float,
                          call: Callable[[], Awaitable[T]]) -> T:
        """One guest-agent call per check at a time; a call that outlives its
        timeout is abandoned here (its thread returns when libvirt gives up)."""
        previous = dom.calls.get(key)
        if previous is not None and not previous.done():
            raise Busy(f"the previous {key} call to the guest agent has not returned")
        future = asyncio.ensure_future(call())
        future.add_done_callback(_retrieve)
        dom.calls[key] = future
        done, _ = await asyncio.wait({future}, timeout=timeout_s + GUEST_CALL_GRACE_S)
        if not done:
            raise Busy(f"no answer from the guest agent within {timeout_s:g} s")
        return future.result()

    # -- reports --------------------------------------------------------------
    def _report(self, dom: _Domain, report: Report) -> None:
        spec = dom.spec
        self.counts.reports[report.kind] += 1
        if report.kind in ("app_failed", "guest_unresponsive"):
            log.warning("instance %s (%s): %s: %s: %s (%d in a row)", spec.name, spec.instance,
                        report.kind, report.probe, report.detail, report.count)
        else:
            log.info("instance %s (%s): %s: %s", spec.name, spec.instance, report.kind,
                     report.detail or report.probe)
        flags = self._failed if report.kind.startswith("app_") else self._unresponsive
        if report.kind in ("app_failed", "guest_unresponsive"):
            flags.add(spec.domain)
        else:
            flags.discard(spec.domain)
        self._save()
        self._emit(DomainEvent(spec.domain, spec.name, report.kind, report.detail, False,
                               self._clock.now(), probe=report.probe, count=report.count))

    def _save(self) -> None:
        try:
            save_json(self._state_dir, STATE_FILE, {
                "app_failed": sorted(self._failed),
                "guest_unresponsive": sorted(self._unresponsive)})
        except OSError as exc:
            log.error("cannot save %s: %s", STATE_FILE, exc)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read: an abandoned call's error is not "never retrieved"


def _log_crash(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("probe task failed", exc_info=task.exception())
