"""The detector loop: heartbeats -> suspect -> confirmed failed/partitioned.

Run by the Controller every `detector_tick_s`. It evaluates each host's phi
detector, opens a confirmation round for suspect hosts (peer probes and a
BMC power read, concurrently, bounded by timeouts), applies the verdict of
`vmha.domain.health.confirm`, keeps the mass-failure guard and the
controller-isolation flag up to date, brings recovered hosts back, and asks
the job runner to start a recovery job for every newly failed host.
All I/O goes through ports; time through the Clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from vmha.domain import guard
from vmha.domain.detector import PhiDetector
from vmha.domain.errors import VmhaError
from vmha.domain.health import Evidence, PowerReading, Verdict, confirm
from vmha.domain.model import Event, Host, HostState, Severity, SubjectKind
from vmha.domain.recovery import POWER_METHODS
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.ports import Clock, EventQuery, Fencer, PeerProber, PowerState, Store

log = logging.getLogger("vmha.engine.detection")
T = TypeVar("T")

GUARD_EVENTS = ("segment.recovery_paused", "segment.recovery_resumed")


class HostMonitor:
    """Per-host detectors, confirmation rounds and the segment guard."""

    def __init__(
        self, settings: ControllerSettings, cluster: Cluster, clock: Clock,
        fencers: Mapping[str, Fencer], prober: PeerProber,
        on_failed: Callable[[Host, float], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.fencers = fencers
        self.prober = prober
        self.on_failed = on_failed
        self.detectors: dict[str, PhiDetector] = {}
        self.healthy_since: dict[str, float] = {}
        self.trouble_since: dict[str, float] = {}
        self.next_confirm: dict[str, float] = {}
        self.confirming: dict[str, asyncio.Task[None]] = {}
        self.paused: set[str] = set()  # segments whose recovery is paused
        self.overridden: set[str] = set()  # resumed by an operator while still unhealthy
        self.isolated = False
        self.pending_enable: set[str] = set()  # returned hosts to re-enable in the cloud
        self._failed: list[Host] = []  # confirmed failed, recovery not started yet
        self.peer_reached: dict[str, float] = {}  # last round in which a peer reached it
        self.peer_contact_lost: dict[str, float] = {}  # first round after that without
        self._started_at = 0.0
        self._guard_version, self._guard_due = -1, 0.0

    # -- heartbeats ---------------------------------------------------------

    def detector(self, host: str) -> PhiDetector:
        det = self.detectors.get(host)
        if det is None:
            det = PhiDetector(self.settings.detector_config())
            self.detectors[host] = det
        return det

    def start(self, now: float) -> None:
        """Fresh detectors: every host counts as heard from `now`, so a host
        that is already dead is still detected (after the warm-up timeout)."""
        self._started_at = now
        for name, host in self.cluster.hosts.items():
            if name not in self.cluster.monitored:
                continue
            self.detector(name).last_arrival = now
            if host.state is not HostState.UP:
                self.trouble_since.setdefault(name, host.state_since)

    def restore(self) -> None:
        """Recover the guard's decisions from the store's events: a segment
        whose last guard event is `segment.recovery_paused` stays paused
        across a controller restart (the pause is an operator matter); one
        resumed by an operator stays resumed while it is still unhealthy."""
        for name in self.cluster.segments:
            events = list_all_events(self.cluster.store, name)
            if not events:
                continue
            last = events[-1]
            if last.type == "segment.recovery_paused":
                self.paused.add(name)
            elif last.payload.get("operator"):
                self.overridden.add(name)
        self._update_guard(self.clock.now())

    def heartbeat(self, host: str, seq: int, sent_at: float, now: float) -> None:
        self.detector(host).heartbeat(seq, sent_at, now)

    def heard_since(self, host: str, t: float) -> bool:
        det = self.detectors.get(host)
        return det is not None and det.last_seq is not None and (det.last_arrival or 0) > t

    def last_seen(self, host: str) -> float:
        """Last time anyone could reach `host`: its last heartbeat, or, when
        peers reached it later (it was partitioned), the end of that
        contact, known no better than the round that found it gone. The
        self-fence deadline counts from here: its agent's watchdog only
        starts counting once it has lost the controller AND its peers."""
        det = self.detectors.get(host)
        seen = det.last_arrival if det and det.last_arrival is not None else self._started_at
        return max(seen, self.peer_contact_lost.get(host, seen))

    def returned(self, host: str, now: float) -> bool:
        """Healthy heartbeats for `host_return_healthy_s`."""
        since = self.healthy_since.get(host)
        return since is not None and now - since >= self.settings.host_return_healthy_s

    # -- the loop -----------------------------------------------------------

    async def tick(self) -> None:
        now = self.clock.now()
        for name in sorted(self.cluster.monitored & self.cluster.hosts.keys()):
            if name not in self.detectors:  # registered since: heard from now on
                self.detector(name).last_arrival = now
            self._evaluate(self.cluster.hosts[name], now)
        # the guard changes only with host states, or as its window slides
        if self.cluster.version != self._guard_version or now >= self._guard_due:
            self._update_guard(now)
        await self.cluster.flush()

    def _evaluate(self, host: Host, now: float) -> None:
        det = self.detector(host.name)
        suspect = det.suspect(now)
        heard = det.last_seq is not None  # a real heartbeat since this controller started
        self._track_health(host.name, det, suspect, now)
        if host.maintenance or host.state is HostState.MAINTENANCE:
            return
        if host.state is HostState.UP and suspect:
            reason = f"no heartbeat for {det.silence(now):.1f} s (phi {det.phi(now):.1f})"
            self.trouble_since[host.name] = now
            self.next_confirm[host.name] = now
            self.cluster.move_host(host.name, HostState.SUSPECT, reason, now)
        elif host.state in (HostState.SUSPECT, HostState.PARTITIONED) and not suspect and heard:
            self._cancel_confirm(host.name)
            self.peer_reached.pop(host.name, None)
            self.peer_contact_lost.pop(host.name, None)
            self.trouble_since.pop(host.name, None)
            self.cluster.move_host(host.name, HostState.UP, "heartbeats resumed", now)
        elif host.state in (HostState.SUSPECT, HostState.PARTITIONED):
            if host.name not in self.confirming and now >= self.next_confirm.get(host.name, 0):
                task = asyncio.ensure_future(self._confirm(host.name))
                self.confirming[host.name] = task
        elif host.state is HostState.RECOVERED and self.returned(host.name, now):
            self._host_returned(host, now)

    def _track_health(self, name: str, det: PhiDetector, suspect: bool, now: float) -> None:
        if suspect or det.last_seq is None:
            self.healthy_since.pop(name, None)
        elif name not in self.healthy_since:
            self.healthy_since[name] = now

    def _host_returned(self, host: Host, now: float) -> None:
        segment = self.cluster.segments.get(host.segment)
        healthy = f"{self.settings.host_return_healthy_s:g} s"
        if segment is not None and segment.hold_recovered_hosts:
            if host.state_reason.startswith("held"):
                return
            reason = f"held for an operator: heartbeats healthy for {healthy}"
            self.cluster.move_host(host.name, HostState.RECOVERED, reason, now,
                                   event_type="host.recovered")
            return
        self.trouble_since.pop(host.name, None)
        reason = f"heartbeats healthy for {healthy} after recovery; re-enabled"
        self.cluster.move_host(host.name, HostState.UP, reason, now)
        self.pending_enable.add(host.name)

    def _cancel_confirm(self, name: str) -> None:
        task = self.confirming.pop(name, None)
        if task is not None:
            task.cancel()

    # -- confirmation -------------------------------------------------------

    async def _confirm(self, name: str) -> None:
        try:
            evidence = await self.gather_evidence(name)
            self._apply_verdict(name, evidence, self.clock.now())
            await self.cluster.flush()
            await self.hand_over_failed()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("confirmation round for host %s failed", name)
            self.next_confirm[name] = self.clock.now() + self.settings.confirm_retry_s
        finally:
            self.confirming.pop(name, None)

    def peers_of(self, name: str) -> list[str]:
        host = self.cluster.hosts[name]
        return [
            h.name for h in self.cluster.hosts_of(host.segment)
            if h.name != name and h.schedulable and not self.detector(h.name).suspect(
                self.clock.now())
        ]

    async def gather_evidence(self, name: str, power: bool = True) -> Evidence:
        """Ask up to `confirm_peers` peers and (if `power`) the BMC, concurrently."""
        peers = self.peers_of(name)
        asked = peers[: self.settings.confirm_peers]
        timeout = self.settings.peer_probe_timeout_s
        probes = [self._bounded(self.prober.probe(p, name, timeout), timeout) for p in asked]
        reading = self._power_reading(name) if power else _not_asked()
        results = await asyncio.gather(reading, *probes)
        first = results[0]
        assert isinstance(first, PowerReading)
        votes = [v if isinstance(v, bool) else None for v in results[1:]]
        return Evidence(power=first, peer_votes=votes, peers_in_segment=len(peers))

    def blocked_host(self, name: str) -> bool:
        """The host is marked up but its heartbeats have stopped: not a target."""
        return self.detector(name).suspect(self.clock.now())

    async def _bounded(self, call: Awaitable[T], timeout: float) -> T | None:
        try:
            return await asyncio.wait_for(call, timeout)
        except (TimeoutError, VmhaError):
            return None

    async def _power_reading(self, name: str) -> PowerReading:
        host = self.cluster.hosts[name]
        methods = [m for level in host.fence_levels for m in level if m in POWER_METHODS]
        fencer = next((self.fencers[m] for m in methods if m in self.fencers), None)
        if fencer is None:
            return PowerReading.NOT_ASKED
        state = await self._bounded(fencer.power_status(host), self.settings.bmc_status_timeout_s)
        if state is None:
            return PowerReading.UNREACHABLE
        return {PowerState.ON: PowerReading.ON, PowerState.OFF: PowerReading.OFF}.get(
            state, PowerReading.UNKNOWN)

    def _apply_verdict(self, name: str, evidence: Evidence, now: float) -> None:
        host = self.cluster.hosts.get(name)
        if host is None or host.state not in (HostState.SUSPECT, HostState.PARTITIONED):
            return
        det = self.detector(name)
        if det.last_seq is not None and not det.suspect(now):
            return  # heartbeats came back during the round
        verdict = confirm(evidence)
        self.next_confirm[name] = now + self.settings.confirm_retry_s
        self._track_peer_contact(name, evidence, now)
        if verdict.verdict is Verdict.FAILED:
            failed = self.cluster.move_host(name, HostState.FAILED, verdict.reason, now,
                                            bmc_unreachable=verdict.bmc_unreachable)
            if failed is not None:
                self._failed.append(failed)
        elif verdict.verdict is Verdict.PARTITIONED and host.state is HostState.SUSPECT:
            self.cluster.move_host(name, HostState.PARTITIONED, verdict.reason, now)
        elif verdict.verdict is Verdict.INCONCLUSIVE:
            log.info("host %s still suspect: %s", name, verdict.reason)

    def _track_peer_contact(self, name: str, evidence: Evidence, now: float) -> None:
        if any(v is True for v in evidence.peer_votes):
            self.peer_reached[name] = now
            self.peer_contact_lost.pop(name, None)
        elif name in self.peer_reached and name not in self.peer_contact_lost:
            self.peer_contact_lost[name] = now

    async def hand_over_failed(self) -> None:
        """Start recovery for hosts confirmed failed since the last call."""
        failed, self._failed = self._failed, []
        for host in failed:
            await self.on_failed(host, self.clock.now())

    # -- guard ----------------------------------------------------------------

    def _update_guard(self, now: float) -> None:
        self._guard_version, self._guard_due = self.cluster.version, now + 1.0
        healths = []
        for seg_name in sorted(self.cluster.segments):
            segment = self.cluster.segments[seg_name]
            hosts = self.cluster.hosts_of(seg_name)
            health = guard.segment_health(hosts, self.trouble_since, now,
                                          self.settings.mass_failure_window_s)
            healths.append(health)
            threshold = segment.mass_failure_threshold
            if seg_name in self.paused:
                if guard.may_resume(health, threshold):
                    self.paused.discard(seg_name)
                    self._segment_event("segment.recovery_resumed", seg_name,
                                        guard.resume_reason(seg_name, health), now)
            elif seg_name in self.overridden:
                if guard.may_resume(health, threshold):
                    self.overridden.discard(seg_name)
            elif guard.should_pause(health, threshold):
                self.paused.add(seg_name)
                self._segment_event("segment.recovery_paused", seg_name,
                                    guard.pause_reason(seg_name, health, threshold), now,
                                    Severity.CRITICAL)
        self._update_isolated(guard.controller_isolated(healths), now)

    def _update_isolated(self, isolated: bool, now: float) -> None:
        if isolated and not self.isolated:
            reason = ("every host of every segment looks down; this controller is probably "
                      "cut off: no fencing anywhere")
            self.cluster.append([Event(type="controller.isolated", subject="controller",
                                       time=now, subject_kind=SubjectKind.SEGMENT,
                                       severity=Severity.CRITICAL,
                                       payload={"reason": reason})])
            log.info(reason)
        elif self.isolated and not isolated:
            log.info("controller sees hosts again; fencing allowed")
        self.isolated = isolated

    def _segment_event(self, etype: str, segment: str, reason: str, now: float,
                       severity: Severity = Severity.WARNING, **extra: str) -> None:
        payload = {"segment": segment, "reason": reason, **extra}
        self.cluster.append([Event(type=etype, subject=segment, time=now,
                                   subject_kind=SubjectKind.SEGMENT, severity=severity,
                                   payload=payload)])

    def resume(self, segment: str, who: str, now: float) -> None:
        """Operator resume: recovery runs even though the segment still looks bad."""
        if segment in self.paused:
            self.paused.discard(segment)
            self.overridden.add(segment)
            self._segment_event("segment.recovery_resumed", segment,
                                f"resumed by operator {who}", now, operator=who)

    def blocked(self, segment: str) -> str:
        """Why fencing/recovery may not run in `segment` now ("" = allowed)."""
        if self.isolated:
            return "controller is isolated: every host looks down; no fencing"
        if segment in self.paused:
            return f"segment {segment} recovery paused: too many hosts failed at once"
        return ""


def list_all_events(store: Store, segment: str) -> list[Event]:
    """The guard events of `segment`, oldest first."""
    out: list[Event] = []
    since = 0
    while True:
        page = store.list_events(EventQuery(since=since, types=GUARD_EVENTS, subject=segment,
                                            limit=1000))
        out.extend(page)
        if len(page) < 1000:
            return out
        since = page[-1].id


async def _not_asked() -> PowerReading:
    return PowerReading.NOT_ASKED
