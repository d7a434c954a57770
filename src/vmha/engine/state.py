"""The controller's view of the cluster, written through to the Store.

Used by every engine part (detection, jobs, instances). Segments and hosts
are cached in memory (the detector reads them ten times a second), every
change written to the store together with its event (behind, see below);
`catch_up()` re-reads them so changes made through the API appear.
Instances and jobs are read from the store when needed.

Writes are changes made over the current record (`change_host`,
`change_instance`): the store refuses one made on an old copy (StaleWrite,
record versions), and the change is then made again on a fresh copy. The
API may change a host's or an instance's configuration at the same time as
the engine changes its state: both survive, neither is overwritten.

The catch-up (`catch_up`: every `store_refresh_s` on the detector's path,
at start, and where the engine looks for a host the API just created)
reads through `io` (vmha.ports.AsyncStore): a real database's calls run in
the store adapter's threads, so a slow store does not hold up heartbeat
handling (vmha.adapters.store.aio); what was read is merged on the loop,
never over a newer copy this engine wrote meanwhile.

Host state changes and bare events (`change_host`, `move_host`, `append`)
are written behind, in order, by one writer task: the change is made on
the cached copy at once (the detector's next look, the guard's tally and
the job runner see it), queued, and the writer writes what queued up in
one transaction per run (`update_hosts`; a mass silence moves thousands of
hosts: one call, not one per host), off the event loop. A host written
meanwhile by the API (skipped as stale) is read again and its queued
changes are made again on top of it; a store that is down is retried with
backoff, in order. The store hands a commit's events to the bus only after
the commit, so no event is published before its change is durable;
`durable()` waits until everything queued so far is written (the job
runner's writes and operator answers wait for it, so a job never overtakes
the host state that caused it). The in-memory store (the simulator's) is
written in line instead, so a run stays deterministic on its virtual loop.
Instances, jobs and policies are read and written through `io` too (the
job runner's steps, actions, decisions, the instance watcher, launches,
the cloud's inventory): no store call of the engine runs on the event loop
(with the in-memory store, `io` calls it in line).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from vmha.adapters.store.aio import async_view
from vmha.domain import backoff
from vmha.domain.errors import NotFound, StaleWrite, TemporaryError, VmhaError
from vmha.domain.model import Event, Host, HostState, Instance, Segment
from vmha.domain.policy import DEFAULT_POLICY, HAPolicy
from vmha.domain.transitions import transition_host
from vmha.engine.hostindex import HostIndex
from vmha.ports import AsyncStore, Store, guard_query, list_all_async

log = logging.getLogger("vmha.engine")
RETRIES = 5  # a write refused as stale is made again on a fresh copy, up to this often
# the change to write over a current record: (new record, its events), or None
HostChange = Callable[[Host], tuple[Host, Sequence[Event]] | None]
InstanceChange = Callable[[Instance], tuple[Instance, Sequence[Event]] | None]
BATCH_MAX = 2000  # host changes written in one transaction at most
RETRY_INITIAL_S, RETRY_MAX_S = 0.5, 10.0  # a store that is down: written again after
CLOSE_FLUSH_S = 5.0  # a stopping engine waits this long for its queued writes


@dataclass
class _Pending:
    """A host change made on the cached copy and queued, not yet durable."""

    name: str
    change: HostChange
    host: Host  # the cached copy it made
    events: list[Event] = field(default_factory=list)


# what the writer's queue holds, in order: host changes, bare events, and
# the futures of `durable()` callers (done once everything before is written)
_Entry = _Pending | list[Event] | asyncio.Future[None]


class Cluster:
    """Cached segments and hosts plus write-through helpers."""

    def __init__(self, store: Store, io: AsyncStore | None = None,
                 now: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.now = now
        self.sleep = sleep
        # instance id -> when the engine last wrote it (with `now`): the cloud
        # inventory does not undo a write newer than its reading
        self.written_at: dict[str, float] = {}
        self.io = io if io is not None else async_view(store)
        self.segments: dict[str, Segment] = {}
        self.hosts: dict[str, Host] = {}
        # the same hosts, ordered for the API's pages (kept in step below)
        self.index = HostIndex()
        # Hosts with a registered agent: the only ones the detector watches
        # (a host without an agent sends no heartbeats to miss).
        self.monitored: frozenset[str] = frozenset()
        self.version = 0  # grows on every host/segment change seen here
        self._queue: list[_Entry] = []  # writes behind (see the module doc), in order
        self._queued: dict[str, int] = {}  # host -> its changes in the queue (no scans)
        self._writing = False  # a run taken from the queue is being written
        self._writer: asyncio.Task[None] | None = None

    async def catch_up(self) -> None:
        """Catch up with the store: segments (few) read again; of the hosts
        only those whose stored version moved (or that appeared), others
        kept, the deleted dropped; the agents' host names. O(hosts) only in
        names and versions (issue 18: at 10,000 hosts reading every host
        took 0.3 s of the event loop every `store_refresh_s`). The sets are
        replaced only when something changed, so readers can tell. Read
        through `io` (off the event loop for a real database); the merge
        keeps what this engine wrote while the reads ran."""
        known = self._known()
        segments = {s.name: s for s in await list_all_async(self.io.list_segments)}
        versions = await self.io.host_versions()
        fetched = await self.io.get_hosts(_stale(versions, known)) if versions != known else []
        monitored = await self.io.agent_hosts()
        self._merge(known, segments, versions, fetched, monitored)

    def _known(self) -> dict[str, int]:
        return {name: h.version for name, h in self.hosts.items()}

    def _merge(self, known: Mapping[str, int], segments: dict[str, Segment],
               versions: Mapping[str, int], fetched: Sequence[Host],
               monitored: frozenset[str]) -> None:
        """Apply what was read when the cache held `known`: hosts gone from
        the store dropped (one that appeared since is kept), the fetched ones
        taken unless the cache holds a copy as new (written meanwhile)."""
        gone = known.keys() - versions.keys()
        newer = [h for h in fetched
                 if h.name not in self.hosts or self.hosts[h.name].version < h.version]
        if gone or newer:
            hosts = {name: h for name, h in self.hosts.items() if name not in gone}
            hosts.update((h.name, h) for h in newer)
            self.hosts = hosts
        self.index.apply(newer, gone)
        self.index.ready = True
        if segments != self.segments or gone or newer or monitored != self.monitored:
            self.version += 1
        if segments != self.segments:
            self.segments = segments
        if monitored != self.monitored:
            self.monitored = monitored

    def hosts_of(self, segment: str) -> list[Host]:
        return sorted(
            (h for h in self.hosts.values() if h.segment == segment), key=lambda h: h.name
        )

    # -- writes -----------------------------------------------------------

    def change_host(self, name: str, change: HostChange) -> Host | None:
        """Write `change(current)` (the new host and its events; None: nothing
        to write) over the cached host. The store refuses a write made on an
        old copy (StaleWrite: the API changed the host's configuration
        meanwhile): the host is read again and the change made again on top
        of it, so both changes survive. None when the host is gone.
        With a store that blocks, written behind (module doc): the new
        cached copy is returned at once, still at the stored version."""
        if not self.io.inline:
            return self._queue_change(name, change)
        for _ in range(RETRIES):
            current = self.hosts.get(name)
            if current is None:
                return None
            wanted = change(current)
            if wanted is None:
                return current
            new, events = wanted
            try:
                stored = self.store.update_host(new, events)
            except StaleWrite:
                self._reload_host(name)
                continue
            except NotFound:
                self._forget(name)
                self.version += 1
                return None
            self._keep(stored)
            self.version += 1
            return stored
        raise StaleWrite("host", name, self.hosts[name].version, -1)

    def _reload_host(self, name: str) -> None:
        try:
            self._keep(self.store.get_host(name))
        except NotFound:
            self._forget(name)
        self.version += 1

    def _keep(self, host: Host) -> None:
        """The cached copy of a host is now `host` (and so in the index)."""
        self.hosts[host.name] = host
        self.index.put(host)

    def _forget(self, name: str) -> None:
        self.hosts.pop(name, None)
        self.index.drop(name)

    def learn(self, hosts: Sequence[Host], gone: Sequence[str]) -> None:
        """The API wrote these hosts (`gone`: deleted them): merged at once,
        as the next catch-up would (a copy the cache holds as new is kept),
        so the API's host pages show its own writes. The host map is
        replaced only when hosts came or went (the detector follows that)."""
        dropped = {n for n in gone if n in self.hosts}
        newer = [h for h in hosts
                 if h.name not in self.hosts or self.hosts[h.name].version < h.version]
        if not dropped and not newer:
            return
        if dropped or any(h.name not in self.hosts for h in newer):
            self.hosts = {n: h for n, h in self.hosts.items() if n not in dropped}
        self.hosts.update((h.name, h) for h in newer)
        self.index.apply(newer, dropped)
        self.version += 1

    def move_host(
        self, name: str, to: HostState, reason: str, now: float, event_type: str | None = None,
        **payload: object,
    ) -> Host | None:
        """Transition host `name` (if allowed) and store it with its event."""
        before = self.hosts.get(name)

        def move(host: Host) -> tuple[Host, list[Event]] | None:
            if host.state is to and event_type is None:
                return None
            return _moved(host, to, reason, now, event_type, payload)

        moved = self.change_host(name, move)
        if before is not None and moved is not None and moved is not before:
            log.info("host %s: %s -> %s (%s)", name, before.state.value, to.value, reason)
        return moved

    def append(self, events: Sequence[Event]) -> None:
        """Events without a state change, written in order with the host
        changes queued before them."""
        if not events:
            return
        if self.io.inline:
            self.store.append_events(events)
            return
        self._queue.append(list(events))
        self._kick()

    # -- the writer (write-behind of host changes and bare events) -----------

    def _queue_change(self, name: str, change: HostChange) -> Host | None:
        current = self.hosts.get(name)
        if current is None:
            return None
        wanted = change(current)
        if wanted is None:
            return current
        new, events = wanted
        self._keep(new)
        self.version += 1
        self._queue.append(_Pending(name, change, new, list(events)))
        self._queued[name] = self._queued.get(name, 0) + 1
        self._kick()
        return new

    def _kick(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_loop())

    async def durable(self) -> None:
        """Return once every change and event queued before the call is
        written (at once when nothing is queued: an in-memory store)."""
        if not self._queue and not self._writing:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(done)
        self._kick()
        await done

    async def close(self) -> None:
        """Write what is queued (for up to CLOSE_FLUSH_S), then stop the writer."""
        if self._writer is None:
            return
        try:
            await asyncio.wait_for(self.durable(), CLOSE_FLUSH_S)
        except TimeoutError:
            log.warning("engine stopping: %d host changes and events not written yet "
                        "(the store does not answer); a new engine re-reads the store",
                        sum(1 for e in self._queue if not isinstance(e, asyncio.Future)))
        finally:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_loop(self) -> None:
        attempt = 0
        while self._queue:
            run = self._take_run()
            if not run:
                continue
            self._writing = True
            try:
                await self._write_run(run)
                attempt = 0
            except TemporaryError as exc:  # the store is down: again later, in order
                self._queue[:0] = run
                self._count(run, +1)
                delay = max(exc.delay_s, backoff.delay_s(attempt, RETRY_INITIAL_S, RETRY_MAX_S))
                attempt += 1
                log.warning("cannot write %d host changes or events yet: %s; trying again "
                            "in %.1f s", len(run), exc.detail, delay)
                await self._pause(delay)
            except Exception as exc:
                self._dropped(run, exc)
            finally:
                self._writing = False

    async def _pause(self, seconds: float) -> None:
        if self.sleep is not None:
            await self.sleep(seconds)
        else:
            await asyncio.sleep(seconds)  # only without a clock (tests); the engine passes its own

    def _take_run(self) -> list[_Pending] | list[list[Event]]:
        """The next run of one kind off the queue (futures before it resolved)."""
        while self._queue and isinstance(self._queue[0], asyncio.Future):
            done = self._queue.pop(0)
            assert isinstance(done, asyncio.Future)
            if not done.done():
                done.set_result(None)
        if not self._queue:
            return []
        hosts = isinstance(self._queue[0], _Pending)
        end = 0
        while (end < len(self._queue) and end < BATCH_MAX
               and isinstance(self._queue[end], _Pending) == hosts
               and not isinstance(self._queue[end], asyncio.Future)):
            end += 1
        run, self._queue[:end] = self._queue[:end], []
        self._count(run, -1)
        return run  # type: ignore[return-value]

    def _count(self, entries: Sequence[object], step: int) -> None:
        for p in entries:
            if isinstance(p, _Pending):
                left = self._queued.get(p.name, 0) + step
                if left > 0:
                    self._queued[p.name] = left
                else:
                    self._queued.pop(p.name, None)

    async def _write_run(self, run: list[_Pending] | list[list[Event]]) -> None:
        if run and isinstance(run[0], list):
            await self.io.append_events([e for events in run for e in events])
            return
        groups: dict[str, list[_Pending]] = {}
        for p in run:
            assert isinstance(p, _Pending)
            groups.setdefault(p.name, []).append(p)
        changes = [(ps[-1].host, [e for p in ps for e in p.events]) for ps in groups.values()]
        stored = await self.io.update_hosts(changes)
        for (name, ps), host in zip(groups.items(), stored, strict=True):
            if host is None:  # moved meanwhile (the API), or gone: again on a fresh copy
                host = await self._write_again(name, ps)
            self._settled(name, host)

    async def _write_again(self, name: str, pending: list[_Pending]) -> Host | None:
        """Read the host again and make its changes again on top, alone."""
        for _ in range(RETRIES):
            try:
                current = await self.io.get_host(name)
            except NotFound:
                return None
            new, events = _reapply(current, pending)
            if new is current:
                return current
            try:
                return await self.io.update_host(new, events)
            except StaleWrite:
                continue
            except NotFound:
                return None
        raise StaleWrite("host", name, -1, -1)

    def _settled(self, name: str, stored: Host | None) -> None:
        """`stored` is durable (None: the host is gone): the changes still
        queued for it are made again on top of it, and the cache follows."""
        queued = [e for e in self._queue if isinstance(e, _Pending)
                  and e.name == name] if name in self._queued else []
        self.version += 1
        if stored is None:
            self._forget(name)
            if queued:
                self._queue = [e for e in self._queue if not (isinstance(e, _Pending)
                                                              and e.name == name)]
                self._queued.pop(name, None)
            return
        cached = self.hosts.get(name)
        if not queued and cached is not None and cached.version > stored.version:
            return  # the catch-up brought a newer copy (the API's) meanwhile
        current = stored
        for p in queued:
            p.host, p.events = _reapply(current, [p])
            current = p.host
        self._keep(current)

    def _dropped(self, run: Sequence[object], exc: Exception) -> None:
        """Not written and not to be retried (e.g. NotLeader): the cached
        copies are read again from the store at the next catch-up."""
        names = sorted({p.name for p in run if isinstance(p, _Pending)})
        if isinstance(exc, VmhaError):
            log.error("%d host changes or events not written: %s", len(run), exc)
        else:
            log.error("%d host changes or events not written", len(run), exc_info=exc)
        for name in names:
            host = self.hosts.get(name)
            if host is not None:
                self._keep(replace(host, version=-1))  # differs from any stored
        self.version += 1

    # -- instances (read and written through `io`) ---------------------------

    async def instances(self, host: str | None = None) -> list[Instance]:
        return await list_all_async(self.io.list_instances,
                                    {"host": host} if host is not None else None)

    async def get_instance(self, instance_id: str) -> Instance | None:
        try:
            return await self.io.get_instance(instance_id)
        except NotFound:
            return None

    async def change_instance(self, instance_id: str,
                              change: InstanceChange) -> Instance | None:
        """Read the instance, write `change(current)` (the new instance and
        its events; None: nothing to write), and on StaleWrite (someone
        changed it meanwhile) read it again and make the change again, so a
        concurrent change is never lost. None when the instance is gone.
        Written after the host changes queued before it are durable."""
        await self.durable()
        for _ in range(RETRIES):
            current = await self.get_instance(instance_id)
            if current is None:
                return None
            wanted = change(current)
            if wanted is None:
                return current
            new, events = wanted
            try:
                stored = await self.io.update_instance(new, events)
            except StaleWrite:
                continue
            except NotFound:
                return None
            if self.now is not None:
                self.written_at[instance_id] = self.now()
            return stored
        raise StaleWrite("instance", instance_id, -1, -1)

    async def policy_of(self, instance: Instance, host: Host | None = None) -> HAPolicy:
        """Inline policy, else the named one, else the segment's default."""
        if instance.policy is not None:
            return instance.policy
        for name in self._policy_names(instance, host):
            try:
                return (await self.io.get_policy(name)).policy
            except NotFound:
                log.warning("instance %s: policy %r does not exist", instance.id, name)
        return DEFAULT_POLICY

    async def guard_events(self, segment: str) -> list[Event]:
        """The mass-failure guard's events of `segment`, oldest first
        (vmha.ports.guard_query): the last one says whether it is paused."""
        out: list[Event] = []
        since = 0
        while True:
            page = await self.io.list_events(guard_query(segment, since))
            out.extend(page)
            if len(page) < 1000:
                return out
            since = page[-1].id

    def _policy_names(self, instance: Instance, host: Host | None) -> list[str]:
        names: Iterable[str | None] = (instance.policy_name,)
        if host is not None and host.segment in self.segments:
            names = (instance.policy_name, self.segments[host.segment].default_policy)
        return [n for n in names if n]


def _reapply(current: Host, pending: Sequence[_Pending]) -> tuple[Host, list[Event]]:
    """Make the changes again, in order, on `current`; one no longer
    allowed there (InvalidTransition) is left out."""
    events: list[Event] = []
    for p in pending:
        try:
            wanted = p.change(current)
        except VmhaError as exc:
            log.warning("host %s: a queued change no longer applies: %s", p.name, exc)
            continue
        if wanted is not None:
            current, new_events = wanted
            events.extend(new_events)
    return current, events


def _stale(versions: Mapping[str, int], known: Mapping[str, int]) -> list[str]:
    """Hosts whose stored version differs from the cached one, or new."""
    return [name for name, version in versions.items() if known.get(name) != version]


def _moved(host: Host, to: HostState, reason: str, now: float, event_type: str | None,
           payload: Mapping[str, object]) -> tuple[Host, list[Event]]:
    """The host moved to `to` (or, already there, with a new reason) and its
    event: `host.<state>`, or `event_type` (e.g. host.fence_failed)."""
    if host.state is to:
        new, event = replace(host, state_reason=reason), None
    else:
        new, event = transition_host(host, to, reason, now)
    if event is None and event_type is None:
        return new, []
    base = event or Event(type="", subject=host.name, time=now,
                          payload={"host": host.name, "segment": host.segment,
                                   "reason": reason})
    if event_type is not None:
        base = replace(base, type=event_type)
    if payload:
        base = replace(base, payload={**base.payload, **payload})
    return new, [base]
