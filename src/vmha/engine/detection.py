"""The detector loop: heartbeats -> suspect -> confirmed failed/partitioned.

Run by the Engine every `detector_tick_s`. It evaluates the hosts whose
state may change, opens a confirmation round for suspect hosts (peer
probes and a BMC power read, concurrently, bounded by timeouts), applies
the verdict of `vmha.domain.health.confirm`, keeps the mass-failure guard
and the controller-isolation flag up to date, brings recovered hosts
back, and asks the job runner to start a recovery job for every newly
failed host. All I/O goes through ports; time through the Clock.

Work per tick is proportional to the hosts that may change state, not to
all hosts (issue 18): a host that is up waits in a deadline queue until
the moment it would turn suspect without another heartbeat
(`PhiDetector.suspect_at`); when that falls due it is evaluated, and if
heartbeats came meanwhile it simply waits for its new deadline. Hosts in
any other state are evaluated every tick. Confirmation rounds pick their
peers from a ring sorted once per change of the segments
(`health.pick_peers`, looking at no more than PEER_SCAN_MAX hosts), at
most `confirm_rounds_per_retry` run at once, and they back off when more
hosts than that are suspect (`health.next_round_in`). Between chunks of
TICK_CHUNK hosts a tick yields to the event loop.

BMC fast path (issue 11 item 12): once an up host's next heartbeat is
overdue (`PhiDetector.overdue_at`: one interval, the acceptable pause and
twice the jitter after the last one; found without a look at the hosts
that are not, see `_read_overdue`), its BMC's power state is read at
once, a status read and never an action, once per silence (a read counts
as a confirmation round: at most `confirm_rounds_per_retry` at a time).
Power off is proof enough (the rule of a confirmation round,
`health.confirm`): the host goes suspect and failed without waiting for
the detector's threshold, cold or warm. Any other answer changes nothing;
the detector carries on as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from vmha.domain import guard
from vmha.domain.deadlines import DeadlineQueue
from vmha.domain.detector import PhiDetector
from vmha.domain.errors import VmhaError
from vmha.domain.health import (
    PARTITIONED_FAILED_ROUNDS,
    Evidence,
    Look,
    Move,
    PowerReading,
    Verdict,
    after_round,
    confirm,
    judge,
    next_round_in,
    pick_peers,
)
from vmha.domain.model import POWER_METHODS, Event, Host, HostState, Severity, SubjectKind
from vmha.engine.settings import ControllerSettings
from vmha.engine.shard import HEARD_WITHIN, ShardView, count_heard
from vmha.engine.state import Cluster
from vmha.ports import Clock, Fencer, PeerProber, PowerState

log = logging.getLogger("vmha.engine.detection")
T = TypeVar("T")
# A deadline is looked at this much before the detector's estimate (which
# may be a few ms late for the rounding of its model): at worst one more look.
DEADLINE_EARLY_S = 0.05
# Hosts evaluated between two yields to the event loop: when thousands change
# at once, signals and the API are still answered.
TICK_CHUNK = 200
PEER_SCAN_MAX = 256  # ring hosts a confirmation round looks at for peers

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
        self.suspects: set[str] = set()  # suspect or partitioned at their last evaluation
        self.confirming: dict[str, asyncio.Task[None]] = {}
        self.paused: set[str] = set()  # segments whose recovery is paused
        self.overridden: set[str] = set()  # resumed by an operator while still unhealthy
        self.isolated = False
        self.pending_enable: set[str] = set()  # returned hosts to re-enable in the cloud
        self.not_enabled: set[str] = set()  # up again, the cloud has not enabled them yet
        self._failed: list[Host] = []  # confirmed failed, recovery not started yet
        self.peer_reached: dict[str, float] = {}  # last round in which a peer reached it
        self.peer_contact_lost: dict[str, float] = {}  # first round after that without
        self.failed_rounds: dict[str, int] = {}  # confirmation rounds in a row found it failed
        self._started_at = 0.0
        self.heard_until = float("inf")  # how far the heartbeat intake has read
        self.lost_until = 0.0  # the kernel dropped heartbeats (ours, not the hosts') before
        self._guard_version, self._guard_due = -1, 0.0
        self.deadlines: DeadlineQueue[str] = DeadlineQueue()  # hosts to look at, by when
        self._watched: frozenset[str] = frozenset()  # monitored hosts that exist
        self._seen: tuple[object, object] = (None, None)  # the cluster's sets, last looked at
        self._rings: dict[str, list[str]] = {}  # segment -> its host names, sorted
        self._tally: dict[str, tuple[int, list[Host]]] = {}  # see _segment_tally
        self.power_checked: dict[str, float] = {}  # host -> last heartbeat its BMC was read after
        self._by_arrival: OrderedDict[str, None] = OrderedDict()  # up hosts, oldest beat first
        self._fast_results: dict[str, tuple[float, PowerReading]] = {}  # to judge next tick
        self._fast_reading: set[str] = set()  # hosts whose fast-path read is in flight
        self._fast_failed: list[tuple[float, Host]] = []  # failed by it, recovery not started
        # Several controllers: whose share each host is, and its owner's
        # verdicts (vmha.engine.shard); None: this controller judges alone.
        self.shard: ShardView | None = None

    # -- heartbeats ---------------------------------------------------------

    def detector(self, host: str) -> PhiDetector:
        det = self.detectors.get(host)
        if det is None:
            det = PhiDetector(self.settings.detector_config())
            self.detectors[host] = det
        return det

    def adopt(self, detectors: Mapping[str, PhiDetector], lost_until: float) -> None:
        """Start from a follower's detectors (vmha.engine.shard.ShardWatch),
        before `start`: a controller that becomes the leader received every
        heartbeat all along, so a host that died before (or as) the last
        leader went is overdue at once instead of after a fresh warm-up."""
        self.detectors = dict(detectors)
        self.lost_until = max(self.lost_until, lost_until)

    def start(self, now: float) -> None:
        """Every host without a heartbeat history (none adopted) counts as
        heard from `now`, so a host that is already dead is still detected
        (after the warm-up timeout); adopted ones keep their last arrival."""
        self._started_at = now
        watched = []
        for name, host in self.cluster.hosts.items():
            if name not in self.cluster.monitored:
                continue
            det = self.detector(name)
            if det.last_arrival is None:
                det.last_arrival = now
            watched.append((det.last_arrival, name))
            if host.state is not HostState.UP:
                self.trouble_since.setdefault(name, host.state_since)
        for _, name in sorted(watched):  # the fast path's order: oldest heartbeat first
            self._arrived(name)
        self._follow_membership(now)

    async def restore(self) -> None:
        """Recover the guard's decisions from the store's events: a segment
        whose last guard event is `segment.recovery_paused` stays paused
        across a controller restart (the pause is an operator matter); one
        resumed by an operator stays resumed while it is still unhealthy."""
        for name in list(self.cluster.segments):
            events = await self.cluster.guard_events(name)
            if not events:
                continue
            last = events[-1]
            if last.type == "segment.recovery_paused":
                self.paused.add(name)
            elif last.payload.get("operator"):
                self.overridden.add(name)
        self._update_guard(self.clock.now())

    def heartbeat(self, host: str, seq: int, sent_at: float, now: float) -> None:
        det = self.detector(host)
        # a gap that spans our own kernel drops teaches the model nothing
        learn = det.last_arrival is None or det.last_arrival >= self.lost_until
        before = det.last_arrival
        det.heartbeat(seq, sent_at, now, learn)
        if det.last_arrival != before:
            self._arrived(host)

    def _arrived(self, host: str) -> None:
        """`host` was heard from last: to the end of the fast path's order."""
        self._by_arrival[host] = None
        self._by_arrival.move_to_end(host)

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

    def silent(self, det: PhiDetector, now: float) -> bool:
        """Is the host suspect by its heartbeats at `now`? Judged no later
        than the intake has read (`heard_until`), and without the time in
        which the controller's own kernel dropped heartbeats: a host last
        heard before `lost_until` counts as silent only since then (its
        beats may have been among the dropped). Our backlog and our drops
        are never the host's silence."""
        return det.suspect(self._judged_at(det, now))

    def _judged_at(self, det: PhiDetector, now: float) -> float:
        """The moment up to which the host's silence counts (see `silent`)."""
        at = min(now, self.heard_until)
        last = det.last_arrival
        if last is not None and last < self.lost_until:
            at = last + max(0.0, at - self.lost_until)
        return at

    def hears(self, hosts: Iterable[str], now: float) -> int | None:
        """How many of `hosts` this controller heard within HEARD_WITHIN
        intervals of what its intake has read (a host in its start-up grace
        period counts): the leader's side of vmha.domain.handover. None when
        it cannot tell: its kernel dropped heartbeats in that time (its own
        load, not deafness)."""
        since = min(now, self.heard_until) - HEARD_WITHIN * self.settings.heartbeat_interval_s
        if self.lost_until > since:
            return None
        return count_heard(self.detectors, hosts, since, grace=True)

    def returned(self, host: str, now: float) -> bool:
        """Healthy heartbeats for `host_return_healthy_s`."""
        since = self.healthy_since.get(host)
        return since is not None and now - since >= self.settings.host_return_healthy_s

    # -- the loop -----------------------------------------------------------

    async def tick(self, heard_until: float | None = None) -> None:
        """Evaluate the hosts that are due (in name order). Silence counts
        only up to `heard_until` (how far the heartbeat intake has read;
        default now): a backlog of the controller's own is not the hosts'
        silence."""
        now = self.clock.now()
        self.heard_until = now if heard_until is None else min(now, heard_until)
        self._follow_membership(now)
        self._follow_shard(now)
        self._apply_fast_reads(now)
        for i, name in enumerate(sorted(self.deadlines.pop_due(now))):
            if i and i % TICK_CHUNK == 0:
                await asyncio.sleep(0)
            host = self.cluster.hosts.get(name)
            if host is None or name not in self._watched:
                continue
            self._evaluate(host, now)
            self._reschedule(name, now)
        self._read_overdue(now)
        # the guard changes only with host states, or as its window slides
        if self.cluster.version != self._guard_version or now >= self._guard_due:
            self._update_guard(now)
        # The fast path's failed hosts go to recovery one heartbeat interval
        # after they failed: hosts that died with them are overdue by then,
        # so the guard has seen them all before anything is fenced.
        due = [h for t, h in self._fast_failed if now - t >= self.settings.heartbeat_interval_s]
        if due:
            self._fast_failed = [(t, h) for t, h in self._fast_failed if h not in due]
            self._failed.extend(due)
            await self.hand_over_failed()

    def _follow_membership(self, now: float) -> None:
        """Watch hosts that registered, forget those that left. The cluster
        replaces its host and agent sets when it reloads them; only then is
        there anything to compare (O(hosts) per reload, not per tick)."""
        seen = (self.cluster.monitored, self.cluster.hosts)
        if seen[0] is self._seen[0] and seen[1] is self._seen[1]:
            return
        watched = frozenset(self.cluster.monitored & self.cluster.hosts.keys())
        for name in watched - self._watched:
            if name not in self.detectors:  # registered since: heard from now on
                self.detector(name).last_arrival = now
                self._arrived(name)
            self.deadlines.schedule(name, now)
        for name in self._watched - watched:
            self.deadlines.cancel(name)
            self.failed_rounds.pop(name, None)
        self._watched, self._seen, self._rings = watched, seen, {}

    def _follow_shard(self, now: float) -> None:
        """Look again at the hosts whose owner's verdict changed (all of
        them when the ring did: a controller joined or left)."""
        if self.shard is None:
            return
        changed, every = self.shard.take_changes()
        for name in (self._watched if every else changed & self._watched):
            self.deadlines.schedule(name, now)

    def silent_host(self, name: str, det: PhiDetector, now: float) -> bool:
        """Is `name` suspect by its heartbeats? With several controllers:
        only when a second one (its owner, or our witness for our own share)
        reports it silent too, when it has a usable report (vmha.engine.shard)."""
        own = self.silent(det, now)
        if self.shard is None or not own:
            return own
        verdict = self.shard.verdict(name)
        return own if verdict is None else verdict

    def _silence_reason(self, name: str, det: PhiDetector, seen: float) -> str:
        reason = f"no heartbeat for {det.silence(seen):.1f} s (phi {det.phi(seen):.1f})"
        if self.shard is None or self.shard.verdict(name) is None:
            return reason
        last = self.shard.last_heard(name)
        since = "" if last is None else f" for {max(0.0, seen - last):.1f} s"
        role = "watches" if not self.shard.owns(name) else "witnesses"
        return f"{reason}; {self.shard.second(name)}, which {role} it, reports it silent{since}"

    def _reschedule(self, name: str, now: float) -> None:
        """An up host: look again when it would turn suspect (moved past
        our own kernel drops, if any), or sooner if new heartbeats could make
        that earlier; any other state: every tick."""
        host = self.cluster.hosts[name]
        det = self.detectors.get(name)
        at = det.suspect_at() if det is not None else None
        if host.state is not HostState.UP or host.maintenance or at is None or det is None:
            self.deadlines.schedule(name, now)  # due again at the next tick
            return
        if self.shard is not None and self.shard.verdict(name) is False:
            # heard by the second controller: looked at again when it
            # reports it silent (`_follow_shard`)
            self.deadlines.cancel(name)
            return
        last = det.last_arrival or now
        if last < self.lost_until:
            at += self.lost_until - last
        # heartbeats to come may sharpen its model: never wait past the quickest
        at = min(at, now + det.quickest_suspicion_s())
        self.deadlines.schedule(name, max(now, at - DEADLINE_EARLY_S))

    def _evaluate(self, host: Host, now: float) -> None:
        det = self.detector(host.name)
        seen = min(now, self.heard_until)
        suspect = self.silent_host(host.name, det, now)
        heard = det.last_seq is not None  # a real heartbeat since this controller started
        self._track_health(host.name, det, suspect, now)
        if host.state in (HostState.SUSPECT, HostState.PARTITIONED):
            self.suspects.add(host.name)
        else:
            self.suspects.discard(host.name)
        segment = self.cluster.segments.get(host.segment)
        move = judge(Look(
            host.state, host.maintenance, suspect, heard,
            healthy_long_enough=host.state is HostState.RECOVERED and self.returned(
                host.name, now),
            segment_holds=segment is not None and segment.hold_recovered_hosts,
            held=host.state_reason.startswith("held")))
        if move is Move.SUSPECT:
            reason = self._silence_reason(host.name, det, seen)
            self.trouble_since[host.name] = now
            self.next_confirm[host.name] = now
            self.cluster.move_host(host.name, HostState.SUSPECT, reason, now)
        elif move is Move.RESUMED:
            self._cancel_confirm(host.name)
            self.peer_reached.pop(host.name, None)
            self.peer_contact_lost.pop(host.name, None)
            self.failed_rounds.pop(host.name, None)
            self.trouble_since.pop(host.name, None)
            self.cluster.move_host(host.name, HostState.UP, "heartbeats resumed", now)
        elif move is Move.CONFIRM:
            if host.name in self._fast_reading:
                self._cancel_confirm(host.name)  # a round reads the BMC too: no waiting
            if (host.name not in self.confirming and now >= self.next_confirm.get(host.name, 0)
                    and len(self.confirming) < self.settings.confirm_rounds_per_retry):
                task = asyncio.ensure_future(self._confirm(host.name))
                self.confirming[host.name] = task
        elif move in (Move.RETURN, Move.HOLD):
            self._host_returned(host, move, now)

    def _track_health(self, name: str, det: PhiDetector, suspect: bool, now: float) -> None:
        if suspect or det.last_seq is None:
            self.healthy_since.pop(name, None)
        elif name not in self.healthy_since:
            self.healthy_since[name] = now

    def _host_returned(self, host: Host, move: Move, now: float) -> None:
        healthy = f"{self.settings.host_return_healthy_s:g} s"
        if move is Move.HOLD:
            reason = f"held for an operator: heartbeats healthy for {healthy}"
            self.cluster.move_host(host.name, HostState.RECOVERED, reason, now,
                                   event_type="host.recovered")
            return
        self.trouble_since.pop(host.name, None)
        reason = f"heartbeats healthy for {healthy} after recovery; re-enabled"
        self.cluster.move_host(host.name, HostState.UP, reason, now)
        self.pending_enable.add(host.name)

    # -- BMC fast path ------------------------------------------------------

    def _read_overdue(self, now: float) -> None:
        """Start a BMC read for every up host whose next heartbeat is
        overdue. Hosts wait in the order of their last heartbeat; the scan
        stops at the first one not overdue even by the least margin a model
        at the configured interval allows, so a tick costs O(hosts overdue),
        and a host leaves the order once read (its next heartbeat puts it
        back at the end)."""
        cfg, least = self.settings, self._least_overdue_s()
        done: list[str] = []
        for name in self._by_arrival:
            det = self.detectors.get(name)
            last = det.last_arrival if det is not None else None
            if det is None or last is None:
                done.append(name)
                continue
            at = self._judged_at(det, now)
            if last + least > at:
                break
            host = self.cluster.hosts.get(name)
            if (host is None or name not in self._watched or host.state is not HostState.UP
                    or host.maintenance or self._power_fencer(host) is None):
                done.append(name)
            elif at < (det.overdue_at() or at):
                continue  # a jittery host: its own model waits a little longer
            elif name in self.confirming:
                done.append(name)
            elif len(self.confirming) >= cfg.confirm_rounds_per_retry:
                break  # every round slot busy: the next tick goes on
            else:
                self.power_checked[name] = last
                self.confirming[name] = asyncio.ensure_future(self._fast_read(name, last))
                done.append(name)
        for name in done:
            del self._by_arrival[name]

    async def _fast_read(self, name: str, last: float) -> None:
        """Read the BMC; the next tick judges the answer (`_apply_fast_reads`)."""
        self._fast_reading.add(name)
        try:
            self._fast_results[name] = (last, await self._power_reading(name))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("BMC fast-path read for host %s failed", name)
        finally:
            self._fast_reading.discard(name)
            if self.confirming.get(name) is asyncio.current_task():
                del self.confirming[name]

    def _apply_fast_reads(self, now: float) -> None:
        """Hosts whose BMC read off and that stayed silent since: suspect and
        failed, all of a tick's together, before the guard looks (a mass
        failure pauses as it would by suspicion). Not while the controller
        hears no host at all: then it may be the one cut off, and the
        detector and the guard decide as without the fast path."""
        results, self._fast_results = self._fast_results, {}
        if not results or not self._hearing_anyone(now):
            return
        for name, (last, reading) in sorted(results.items()):
            host = self.cluster.hosts.get(name)
            det = self.detectors.get(name)
            if (reading is not PowerReading.OFF or host is None or det is None
                    or host.state is not HostState.UP or host.maintenance
                    or det.last_arrival != last):
                continue  # no proof, or the host moved on meanwhile
            silence = det.silence(min(now, self.heard_until))
            self.trouble_since[name] = now
            self.healthy_since.pop(name, None)  # its return counts from new heartbeats
            self.next_confirm[name] = now + self._retry_in()
            self.cluster.move_host(name, HostState.SUSPECT,
                                   f"no heartbeat for {silence:.1f} s; BMC read at once: power off",
                                   now)
            failed = self.cluster.move_host(name, HostState.FAILED,
                                            confirm(Evidence(power=reading)).reason, now)
            if failed is not None:  # recovery starts one interval later (see tick)
                self._fast_failed.append((now, failed))
            self.deadlines.schedule(name, now)  # no longer up: looked at every tick

    def _hearing_anyone(self, now: float) -> bool:
        """Some host's last heartbeat is not overdue (the newest is last in
        the fast path's order)."""
        newest = next(reversed(self._by_arrival), None)
        det = self.detectors.get(newest) if newest is not None else None
        if det is None or det.last_arrival is None:
            return False
        return det.last_arrival + self._least_overdue_s() > self._judged_at(det, now)

    def _least_overdue_s(self) -> float:
        """The least silence `overdue_at` allows a model at the configured interval."""
        cfg = self.settings
        return (cfg.heartbeat_interval_s + cfg.detector_acceptable_pause_s
                + 2.0 * cfg.detector_min_std_s)

    def _cancel_confirm(self, name: str) -> None:
        task = self.confirming.pop(name, None)
        if task is not None:
            task.cancel()

    # -- confirmation -------------------------------------------------------

    async def _confirm(self, name: str) -> None:
        try:
            evidence = await self.gather_evidence(name)
            self._apply_verdict(name, evidence, self.clock.now())
            await self.hand_over_failed()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("confirmation round for host %s failed", name)
            self.next_confirm[name] = self.clock.now() + self._retry_in()
        finally:
            self.confirming.pop(name, None)

    def peers_of(self, name: str, want: int) -> tuple[list[str], int]:
        """Up to `want` peers to ask about `name` (schedulable, heartbeats
        current), and how many there are (counted up to want + 1)."""
        host = self.cluster.hosts.get(name)
        if host is None:
            return [], 0
        ring = self._rings.get(host.segment)
        if ring is None:
            ring = self._rings[host.segment] = sorted(
                h.name for h in self.cluster.hosts.values() if h.segment == host.segment)
        now = self.clock.now()

        def usable(peer: str) -> bool:
            h = self.cluster.hosts.get(peer)
            return h is not None and h.schedulable and not self.silent(self.detector(peer), now)

        return pick_peers(ring, name, want, usable, PEER_SCAN_MAX)

    async def gather_evidence(self, name: str, power: bool = True,
                              want: int | None = None) -> Evidence:
        """Ask up to `want` peers (default `confirm_peers`; a self-fence proof
        needs more in a large segment) and (if `power`) the BMC, concurrently."""
        asked, peers = self.peers_of(name, want or self.settings.confirm_peers)
        timeout = self.settings.peer_probe_timeout_s
        probes = [self._bounded(self.prober.probe(p, name, timeout), timeout) for p in asked]
        reading = self._power_reading(name) if power else _not_asked()
        results = await asyncio.gather(reading, *probes)
        first = results[0]
        assert isinstance(first, PowerReading)
        votes = [v if isinstance(v, bool) else None for v in results[1:]]
        return Evidence(power=first, peer_votes=votes, peers_in_segment=peers, asked=asked)

    def _retry_in(self) -> float:
        """`confirm_retry_s`, stretched when many hosts are suspect at once."""
        return next_round_in(self.settings.confirm_retry_s, len(self.suspects),
                             self.settings.confirm_rounds_per_retry)

    def blocked_host(self, name: str) -> bool:
        """The host is marked up but its heartbeats have stopped: not a target."""
        return self.silent(self.detector(name), self.clock.now())

    def target_ok(self, name: str) -> bool:
        """May receive instances: not `blocked_host`, and not a returned host
        the cloud has not enabled again yet (Nova would refuse the move)."""
        return name not in self.not_enabled and not self.blocked_host(name)

    async def _bounded(self, call: Awaitable[T], timeout: float) -> T | None:
        try:
            return await asyncio.wait_for(call, timeout)
        except (TimeoutError, VmhaError):
            return None

    def _power_fencer(self, host: Host) -> Fencer | None:
        """The fencer of the first power method of the host's fence levels
        (the configured default when it has none of its own) that we have."""
        levels = host.fence_levels or self.settings.default_fence_levels
        methods = (m for level in levels for m in level if m in POWER_METHODS)
        return next((self.fencers[m] for m in methods if m in self.fencers), None)

    async def power_reading(self, name: str, timeout_s: float | None = None) -> PowerReading:
        """What `name`'s BMC says now: a status read, never an action."""
        return await self._power_reading(name, timeout_s)

    async def _power_reading(self, name: str, timeout_s: float | None = None) -> PowerReading:
        host = self.cluster.hosts.get(name)
        if host is None:
            return PowerReading.NOT_ASKED
        fencer = self._power_fencer(host)
        if fencer is None:
            return PowerReading.NOT_ASKED
        state = await self._bounded(fencer.power_status(host),
                                    timeout_s or self.settings.bmc_status_timeout_s)
        if state is None:
            return PowerReading.UNREACHABLE
        return {PowerState.ON: PowerReading.ON, PowerState.OFF: PowerReading.OFF}.get(
            state, PowerReading.UNKNOWN)

    def _apply_verdict(self, name: str, evidence: Evidence, now: float) -> None:
        host = self.cluster.hosts.get(name)
        if host is None or host.state not in (HostState.SUSPECT, HostState.PARTITIONED):
            return
        det = self.detector(name)
        if det.last_seq is not None and not self.silent_host(name, det, now):
            return  # heartbeats came back during the round
        verdict = confirm(evidence)
        self.next_confirm[name] = now + self._retry_in()
        self._track_peer_contact(name, evidence, now)
        streak = self.failed_rounds.get(name, 0) + 1 if verdict.verdict is Verdict.FAILED else 0
        self.failed_rounds[name] = streak
        to = after_round(host.state, verdict.verdict, streak,
                         power_off=evidence.power is PowerReading.OFF)
        if to is None and verdict.verdict is Verdict.FAILED:
            log.info("host %s still partitioned: %s (failed rounds in a row: %d of %d)",
                     name, verdict.reason, streak, PARTITIONED_FAILED_ROUNDS)
        if to is HostState.FAILED:
            failed = self.cluster.move_host(name, HostState.FAILED, verdict.reason, now,
                                            bmc_unreachable=verdict.bmc_unreachable)
            if failed is not None:
                self._failed.append(failed)
        elif to is not None:
            self.cluster.move_host(name, to, verdict.reason, now)
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

    def _segment_tally(self) -> dict[str, tuple[int, list[Host]]]:
        """Per segment: its hosts not in maintenance, and those that look
        down now. Counted again only when a host changed (cluster.version),
        so the guard's window sliding costs O(hosts in trouble)."""
        if self.cluster.version != self._guard_version:
            tally: dict[str, tuple[int, list[Host]]] = {}
            for h in self.cluster.hosts.values():
                if h.maintenance or h.state is HostState.MAINTENANCE:
                    continue
                total, down = tally.get(h.segment, (0, []))
                if h.state in guard.TROUBLE_STATES:
                    down.append(h)
                tally[h.segment] = (total + 1, down)
            self._tally = tally
        return self._tally

    def _update_guard(self, now: float) -> None:
        tally = self._segment_tally()
        self._guard_version, self._guard_due = self.cluster.version, now + 1.0
        healths = []
        for seg_name in sorted(self.cluster.segments):
            segment = self.cluster.segments[seg_name]
            total, down = tally.get(seg_name, (0, []))
            since = (self.trouble_since.get(h.name, h.state_since) for h in down)
            health = guard.health_of(total, since, now, self.settings.mass_failure_window_s)
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


async def _not_asked() -> PowerReading:
    return PowerReading.NOT_ASKED
