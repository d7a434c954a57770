"""`GET /metrics`: the controller in the Prometheus exposition format.

Two kinds of series:
- read at scrape time from what is already kept (no work on any hot
  path): hosts by segment and state, per-host heartbeat age and phi (a
  label per host only up to `[metrics] per_host_limit` hosts; above that
  only the worst values, so the series count stays bounded), the
  heartbeat receiver's counters by reason, unfinished jobs by kind and
  state, pending decisions, paused segments, store readiness;
- derived from the outbox as it is written: a task reads new events every
  `[metrics] poll_s` (one indexed query, like an SSE stream) and, when a
  host-recovery job ends, reads that job once and observes its phases
  (vmha.domain.timeline: detect, fence, dispatch, verify, total) and its
  fence attempts by method and result; the webhook dispatcher reports each
  delivery's latency (commit to answer) and dead letters.

Protected like the API: a bearer token with `metrics:read` (admin,
operator, viewer). Built by the composition root (vmha.cli); no globals
(its own CollectorRegistry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import Liveness
from vmha.api.inventory import pause_reasons
from vmha.domain.model import Event, HostState, JobKind, JobState
from vmha.domain.timeline import timeline
from vmha.errors import NotFound, VmhaError
from vmha.ports import Clock, EventQuery, Store, list_all

log = logging.getLogger("vmha.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECOVERY_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60, 120, 300, 600)
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WATCHED = ("job.done", "job.failed", "host.fence_failed", "instance.recovery_failed",
           "instance.unplaceable")
UNFINISHED = tuple(s for s in JobState if s not in (JobState.DONE, JobState.FAILED))


class ControllerMetrics:
    """The controller's registry; `observe` folds new outbox events in."""

    def __init__(self, store: Store, clock: Clock, per_host_limit: int = 200,
                 liveness: Callable[[], Mapping[str, Liveness]] | None = None,
                 heartbeats: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.cursor = 0
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.phase = {name: Histogram(
            f"vmha_recovery_{name}_seconds", help_text, registry=r, buckets=RECOVERY_BUCKETS)
            for name, help_text in (
                ("detect", "Host recovery: last heartbeat to confirmed failed"),
                ("fence", "Host recovery: fencing (power-off and confirmation)"),
                ("dispatch", "Host recovery: asking the cloud to start the instances"),
                ("verify", "Host recovery: instances running (and answering) on targets"),
                ("total", "Host recovery: last heartbeat to the job's end"))}
        self.fence_attempts = Counter("vmha_fence_attempts", "Fence steps by method, "
                                      "phase (off, confirm) and result",
                                      ["method", "phase", "result"], registry=r)
        self.jobs_finished = Counter("vmha_jobs_finished", "Jobs that ended, by kind and state",
                                     ["kind", "state"], registry=r)
        self.webhook_latency = Histogram("vmha_webhook_delivery_seconds", "Event commit to "
                                         "a webhook's 2xx answer", registry=r,
                                         buckets=WEBHOOK_BUCKETS)
        self.dead_letters = Counter("vmha_webhook_dead_letters", "Events parked as dead "
                                    "letters after every retry failed", registry=r)
        self.fence_failures = Counter("vmha_fence_failures", "Hosts whose every fence level "
                                      "failed (host.fence_failed)", registry=r)
        self.recovery_failures = Counter("vmha_recovery_failures", "Instances vmha could not "
                                         "recover, by event", ["event"], registry=r)
        r.register(_StateCollector(self, per_host_limit, liveness, heartbeats))

    # -- from the outbox --------------------------------------------------------

    def start_at_end(self) -> None:
        self.cursor = self.store.last_event_id()

    def poll(self, limit: int = 1000) -> int:
        """Fold in the events written since the last poll; how many there were."""
        events = self.store.list_events(EventQuery(since=self.cursor, limit=limit,
                                                   types=WATCHED))
        for event in events:
            self.observe(event)
        if events:
            self.cursor = events[-1].id
        elif (last := self.store.last_event_id()) > self.cursor:
            self.cursor = last  # nothing of interest in between
        return len(events)

    def observe(self, event: Event) -> None:
        if event.type == "host.fence_failed":
            self.fence_failures.inc()
            return
        if event.type.startswith("instance."):
            self.recovery_failures.labels(event.type).inc()
            return
        kind = str(event.payload.get("kind", ""))
        self.jobs_finished.labels(kind or "unknown", event.type.removeprefix("job.")).inc()
        if kind != JobKind.HOST_RECOVERY.value:
            return
        try:
            job = self.store.get_job(event.subject)
        except NotFound:
            return
        tl = timeline(job)
        for phase, hist in self.phase.items():
            took = tl.total_s if phase == "total" else tl.duration(phase)
            if took is not None:
                hist.observe(took)
        for step in tl.steps:
            if step.name.startswith("fence:") and step.state in ("done", "failed"):
                _, _, methods, phase = step.name.split(":", 3)
                result = "ok" if step.state == "done" else "failed"
                self.fence_attempts.labels(methods, phase, result).inc()

    def delivered(self, event: Event, status: str, at: float) -> None:
        """A webhook delivery ended (the dispatcher's hook)."""
        if status == "delivered":
            self.webhook_latency.observe(max(0.0, at - event.time))
        elif status == "dead":
            self.dead_letters.inc()

    async def run(self, poll_s: float) -> None:
        await asyncio.to_thread(self.start_at_end)
        while True:
            try:
                while await asyncio.to_thread(self.poll) >= 1000:
                    pass
            except VmhaError as exc:
                log.warning("metrics: cannot read new events: %s", exc.detail)
            await self.clock.sleep(poll_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges read at scrape time from the store and the running engine."""

    def __init__(self, m: ControllerMetrics, per_host_limit: int,
                 liveness: Callable[[], Mapping[str, Liveness]] | None,
                 heartbeats: Callable[[], Mapping[str, int]] | None) -> None:
        self.m, self.limit = m, per_host_limit
        self.liveness, self.heartbeats = liveness, heartbeats

    def describe(self) -> Iterable[Any]:
        return []  # collected fresh on every scrape; nothing to declare ahead

    def collect(self) -> Iterable[Any]:
        store = self.m.store
        try:
            segments = [s.name for s in list_all(store.list_segments)]
            hosts = list_all(store.list_hosts)
        except VmhaError:
            yield GaugeMetricFamily("vmha_store_up", "The store answers", value=0)
            return
        yield GaugeMetricFamily("vmha_store_up", "The store answers", value=1)
        yield from self._hosts(segments, hosts)
        yield from self._liveness(len(hosts))
        yield from self._heartbeats()
        yield from self._jobs()
        paused = pause_reasons(store, segments)
        g = GaugeMetricFamily("vmha_segment_recovery_paused", "1 while the mass-failure guard "
                              "holds the segment's fencing and recovery", labels=["segment"])
        for name in segments:
            g.add_metric([name], 1.0 if name in paused else 0.0)
        yield g

    def _hosts(self, segments: list[str], hosts: list[Any]) -> Iterable[Any]:
        counts = {(seg, st.value): 0 for seg in segments for st in HostState}
        for h in hosts:
            counts[(h.segment, h.state.value)] = counts.get((h.segment, h.state.value), 0) + 1
        g = GaugeMetricFamily("vmha_hosts", "Hosts by segment and state",
                              labels=["segment", "state"])
        for (seg, st), n in sorted(counts.items()):
            g.add_metric([seg, st], n)
        yield g

    def _liveness(self, host_count: int) -> Iterable[Any]:
        live = dict(self.liveness()) if self.liveness is not None else {}
        ages = {h: v.heartbeat_age_s for h, v in live.items() if v.heartbeat_age_s is not None}
        worst_age = GaugeMetricFamily("vmha_heartbeat_age_max_seconds",
                                      "The oldest last heartbeat among watched hosts",
                                      value=max(ages.values(), default=0.0))
        worst_phi = GaugeMetricFamily("vmha_phi_max", "The highest suspicion among hosts",
                                      value=max((v.phi for v in live.values()), default=0.0))
        yield worst_age
        yield worst_phi
        if host_count > self.limit:
            return  # bounded cardinality: no per-host series in large clusters
        age = GaugeMetricFamily("vmha_host_heartbeat_age_seconds",
                                "Seconds since the host's last heartbeat", labels=["host"])
        phi = GaugeMetricFamily("vmha_host_phi", "The failure detector's suspicion of the host",
                                labels=["host"])
        for host, value in sorted(ages.items()):
            age.add_metric([host], value)
        for host, v in sorted(live.items()):
            phi.add_metric([host], v.phi)
        yield age
        yield phi

    def _heartbeats(self) -> Iterable[Any]:
        counts = dict(self.heartbeats()) if self.heartbeats is not None else {}
        received = _counter("vmha_heartbeats_received", "Heartbeat datagrams accepted")
        received.add_metric([], counts.get("accepted", 0))
        dropped = _counter("vmha_heartbeats_dropped", "Heartbeat datagrams dropped, by reason",
                           ["reason"])
        for reason, n in sorted(counts.items()):
            if reason != "accepted":
                dropped.add_metric([reason], n)
        yield received
        yield dropped

    def _jobs(self) -> Iterable[Any]:
        g = GaugeMetricFamily("vmha_jobs", "Unfinished jobs by kind and state",
                              labels=["kind", "state"])
        pending_decisions = 0
        for state in UNFINISHED:
            jobs = list_all(self.m.store.list_jobs, {"state": state.value})
            by_kind: dict[str, int] = {k.value: 0 for k in JobKind}
            for job in jobs:
                by_kind[job.kind.value] += 1
            for kind, n in by_kind.items():
                g.add_metric([kind, state.value], n)
            if state is JobState.PENDING:
                pending_decisions = by_kind[JobKind.DECISION.value]
        yield g
        yield GaugeMetricFamily("vmha_decisions_pending", "Custom decisions waiting for an "
                                "answer", value=pending_decisions)


def _counter(name: str, help_text: str, labels: list[str] | None = None) -> Any:
    return CounterMetricFamily(name, help_text, labels=labels)


router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request,
            _: Principal = Depends(authorize(Permission.METRICS_READ))) -> Response:
    """Prometheus exposition (text format 0.0.4)."""
    m: ControllerMetrics | None = getattr(request.app.state, "vmha_metrics", None)
    if m is None:
        raise NotFound("endpoint", "/metrics (this process runs no controller)")
    return Response(m.exposition(), media_type=CONTENT_TYPE)


def install(app: FastAPI, m: ControllerMetrics) -> None:
    app.state.vmha_metrics = m
    app.include_router(router)

