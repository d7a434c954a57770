"""The webhook dispatcher: reads the outbox in order and delivers every
event to every matching subscription, at least once.

Design (docs/events.md has the user-facing version):
- One *tail reader* takes the events this process commits from the
  in-process bus as soon as they are committed, and reads the outbox for
  events after the newest one it has (one cheap indexed query, whatever the
  number of subscriptions) every `poll_s` (other processes' commits) and
  whenever the bus cannot vouch for every new event; it keeps the most recent
  `tail_max` events in memory and wakes the workers. It also reloads the
  subscriptions and redelivery requests every `refresh_s`, and stores
  every worker's progress every
  `checkpoint_s` (one writer: workers never wait on the database to send).
- One *worker* per subscription, with its own cursor (stored in the
  subscription row): it takes the events after its cursor in id order
  (from the tail, or from the store when it is further behind), delivers
  the matching ones in order, one at a time (so order is kept per
  subscription, and a failing receiver blocks only its own worker). A
  backlog is pipelined (up to `pipeline` requests written at once on the
  connection, answers read in order: one wake-up of each side for many
  requests), at a price: a receiver that fails one request may already
  have accepted the next ones, which are sent again after it. After a
  failure the worker sends one at a time until `pipeline` events in a row
  were delivered.
- A failed POST is retried after `backoff_initial_s * 2**(n-1)` (capped
  at `backoff_max_s`) times a random factor in [1-jitter, 1+jitter] (from
  the injected `random.Random`; waiting through the `Clock`). Each failure
  is stored at once (status `retrying`). After `max_attempts` the event is
  parked as a dead letter (status `dead`) and the cursor moves past it. An
  operator's redelivery request (status `redeliver`) is sent again before
  the worker goes on with new events.
- At least once: a controller killed between a POST and the next
  checkpoint sends those events again after a restart (a clean stop
  stores the cursors first). The CloudEvents `id` is the event id, so
  receivers dedupe on it.

Used by `vmha.controller.service` (as one lifespan task) and the benchmark. It
must not decide anything about recovery; it only moves events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from vmha.domain import backoff
from vmha.domain.model import Event
from vmha.errors import NotFound, TemporaryError, VmhaError
from vmha.ports import (
    Bus,
    Clock,
    Delivery,
    DeliveryStatus,
    EventQuery,
    Store,
    Subscription,
    type_matches,
)

log = logging.getLogger("vmha.bus")
KEEP_PER_CHECKPOINT = 4  # successful deliveries recorded per checkpoint (a sample)


@dataclass(frozen=True)
class DispatchSettings:
    """Tunables of the dispatcher (from `[events]` in vmha.toml)."""

    poll_s: float = 0.05
    refresh_s: float = 1.0
    checkpoint_s: float = 0.25
    batch: int = 200
    # requests of a backlog written at once on a subscription's connection;
    # 1: one at a time, the strict order (docs/events.md)
    pipeline: int = 16
    tail_max: int = 10000
    max_attempts: int = 8
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    jitter: float = 0.2
    store_retry_s: float = 1.0


class Sender(Protocol):
    async def send(self, subscription: Subscription, event: Event) -> None:
        """Return when delivered; raise TemporaryError (DeliveryFailed) if not."""
        ...

    async def send_many(self, subscription: Subscription, events: Sequence[Event],
                        ) -> tuple[int, TemporaryError | None]:
        """Send in order (pipelined where the transport can): how many were
        delivered before the first that was not, and why it was not."""
        ...


def matches(subscription: Subscription, event: Event) -> bool:
    """Whether `event` passes the subscription's type, subject and project filters."""
    if not type_matches(event.type, subscription.event_types):
        return False
    if subscription.subject is not None and event.subject != subscription.subject:
        return False
    return subscription.project is None or event.project == subscription.project


def backoff_s(attempt: int, settings: DispatchSettings, rng: random.Random) -> float:
    """The wait after failed attempt number `attempt` (1-based)."""
    return backoff.delay_s(attempt - 1, settings.backoff_initial_s, settings.backoff_max_s,
                           settings.jitter, rng.random())


class _Tail:
    """The newest events, read once for every worker: all events with ids
    in (start, head] while `start` is known. Wakes waiting workers."""

    def __init__(self, max_len: int) -> None:
        self.start: int | None = None  # unknown until the first read
        self.head = 0
        self.events: deque[Event] = deque()
        self.max_len = max_len
        self.changed = asyncio.Event()

    def begin(self, head: int) -> None:
        self.start = self.head = head
        self._wake()

    def extend(self, events: list[Event]) -> None:
        if not events or self.start is None:
            return
        self.events.extend(events)
        self.head = events[-1].id
        while len(self.events) > self.max_len:
            self.start = self.events.popleft().id
        self._wake()

    def after(self, cursor: int, limit: int) -> list[Event] | None:
        """Events after `cursor` (at most `limit`), or None when the tail
        does not reach back that far (read the store instead)."""
        if self.start is None or cursor < self.start:
            return None
        out: list[Event] = []
        for event in reversed(self.events):  # the wanted ones are at the end
            if event.id <= cursor:
                break
            out.append(event)
        out.reverse()
        return out[:limit]

    async def wait_beyond(self, cursor: int) -> None:
        while self.head <= cursor:
            await self.changed.wait()

    def _wake(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()


class Dispatcher:
    """Runs one worker per subscription until `stop()` (see module doc)."""

    def __init__(self, store: Store, clock: Clock, sender: Sender,
                 settings: DispatchSettings | None = None,
                 rng: random.Random | None = None, bus: Bus | None = None) -> None:
        self.store = store
        self.bus = bus  # wakes the tail reader at each commit of this process
        self.clock = clock
        self.sender = sender
        self.settings = settings or DispatchSettings()
        self.rng = rng or random.Random()
        self.tail = _Tail(self.settings.tail_max)
        self.workers: dict[str, _Worker] = {}
        self._stopping = False
        # Told of every delivery that ended (delivered or dead), with the
        # event and when: the controller's metrics (latency, dead letters).
        self.on_delivery: Callable[[Event, str, float], None] | None = None

    async def run(self) -> None:
        """Read the tail and keep one worker per subscription, until stopped."""
        next_refresh = next_checkpoint = 0.0
        woken = False
        try:
            while not self._stopping:
                try:
                    await self.read_tail(woken)
                    now = self.clock.now()
                    if now >= next_refresh:
                        await self.refresh()
                        next_refresh = now + self.settings.refresh_s
                    if now >= next_checkpoint:
                        await self.checkpoint()
                        next_checkpoint = now + self.settings.checkpoint_s
                except VmhaError as exc:
                    log.warning("event dispatch: cannot read the store: %s", exc.detail)
                except Exception:
                    log.exception("event dispatch: unexpected error; retrying")
                woken = await self._pause()
        finally:
            await self._stop_workers(list(self.workers))

    async def _pause(self) -> bool:
        """Until this process commits a newer event (the bus: True), or
        `poll_s` passed (False: the poll that finds other processes' events)."""
        if self.bus is None or self.tail.start is None:
            await self.clock.sleep(self.settings.poll_s)
            return False
        return await self.bus.wait(self.tail.head, self.settings.poll_s)

    async def stop(self) -> None:
        self._stopping = True
        await self._stop_workers(list(self.workers))

    async def read_tail(self, woken: bool = False) -> None:
        """Add the newest events to the tail: handed over by the bus when it
        woke us and holds them all, else read from the store."""
        if self.tail.start is None:
            self.tail.begin(await asyncio.to_thread(self.store.last_event_id))
            return
        if woken and self.bus is not None:
            fresh = self.bus.since(self.tail.head)
            if fresh:
                self.tail.extend(fresh[: self.settings.tail_max])
                return
        query = EventQuery(since=self.tail.head, limit=self.settings.tail_max)
        self.tail.extend(await asyncio.to_thread(self.store.list_events, query))

    async def checkpoint(self) -> None:
        """Store every worker's cursor and recent deliveries, in one
        transaction."""
        taken = {w.sub.id: (w, w.take()) for w in list(self.workers.values())}
        progress = {sid: p for sid, (_, p) in taken.items() if p is not None}
        if not progress:
            return
        try:
            await asyncio.to_thread(self.store.save_progress, progress)
        except BaseException:
            for worker, p in taken.values():
                if p is not None:
                    worker.untake(p)
            raise
        for worker, p in taken.values():
            if p is not None:
                worker.saved(p[1])

    async def refresh(self) -> None:
        """Start workers for new subscriptions, stop those of deleted ones,
        and hand out redelivery requests."""
        subs = await asyncio.to_thread(self.store.list_subscriptions)
        if self._stopping:
            # stop() ran while the list was read: a worker started now would
            # begin at its last stored cursor and send again what was sent
            return
        wanted = {s.id: s for s in subs}
        await self._stop_workers([sid for sid in self.workers if sid not in wanted])
        for sid, sub in wanted.items():
            if sid not in self.workers:
                worker = _Worker(self, sub)
                self.workers[sid] = worker
                worker.task = asyncio.create_task(worker.run(), name=f"webhook-{sid}")
        for sid, worker in list(self.workers.items()):
            with contextlib.suppress(NotFound):
                requests = await asyncio.to_thread(
                    self.store.list_deliveries, sid, DeliveryStatus.REDELIVER
                )
                worker.request_redelivery([d.event_id for d in requests])

    async def _stop_workers(self, ids: list[str]) -> None:
        """Cancel the workers, then store how far each got (a clean stop
        re-sends nothing)."""
        workers = [self.workers.pop(sid) for sid in ids]
        tasks = [w.task for w in workers if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in workers:
            try:
                await worker.checkpoint()
            except NotFound:
                pass  # deleted: nothing to keep
            except VmhaError as exc:
                log.warning("webhook %s: cannot store the cursor at stop: %s",
                            worker.sub.id, exc.detail)


class _Worker:
    """Delivers one subscription's events in order (see the module doc)."""

    def __init__(self, dispatcher: Dispatcher, subscription: Subscription) -> None:
        self.d = dispatcher
        self.sub = subscription
        self.cursor = subscription.cursor  # in memory; stored by checkpoint()
        self._saved = subscription.cursor
        self.task: asyncio.Task[None] | None = None
        self.redeliveries: list[int] = []
        # The latest successful deliveries, stored at the next checkpoint
        # (a sample: the store keeps the newest few hundred anyway).
        self._pending: deque[Delivery] = deque(maxlen=KEEP_PER_CHECKPOINT)
        self._wake = asyncio.Event()
        self._careful = 0  # events still sent one at a time after a failure

    def take(self) -> tuple[list[Delivery], int] | None:
        """What to store at a checkpoint (the pending records and the
        cursor), or None when nothing changed since the last one."""
        if self.cursor == self._saved and not self._pending:
            return None
        pending = list(self._pending)
        self._pending.clear()
        return pending, self.cursor

    def untake(self, progress: tuple[list[Delivery], int]) -> None:
        """The checkpoint failed: keep the records for the next one."""
        self._pending.extendleft(reversed(progress[0]))

    def saved(self, cursor: int) -> None:
        self._saved = max(self._saved, cursor)

    async def checkpoint(self) -> None:
        progress = self.take()
        if progress is None:
            return
        try:
            await asyncio.to_thread(self.d.store.save_deliveries, self.sub.id, *progress)
        except BaseException:
            self.untake(progress)
            raise
        self.saved(progress[1])

    def request_redelivery(self, event_ids: list[int]) -> None:
        new = [e for e in sorted(event_ids) if e not in self.redeliveries]
        if new:
            self.redeliveries.extend(new)
            self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self._redeliver()
                if not await self._one_batch():
                    await self._idle()
            except NotFound:
                return  # the subscription was deleted meanwhile
            except asyncio.CancelledError:
                raise
            except TemporaryError as exc:
                log.warning("webhook %s: %s; retrying", self.sub.id, exc.detail)
                await self.d.clock.sleep(self.d.settings.store_retry_s)
            except Exception:
                log.exception("webhook %s: unexpected error; retrying", self.sub.id)
                await self.d.clock.sleep(self.d.settings.store_retry_s)

    async def _idle(self) -> None:
        """Wait for a newer event or a redelivery request."""
        head = asyncio.ensure_future(self.d.tail.wait_beyond(self.cursor))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({head, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            head.cancel()
            wake.cancel()
        self._wake.clear()

    async def _one_batch(self) -> bool:
        """Deliver the next batch; False when there was nothing new."""
        events = self.d.tail.after(self.cursor, self.d.settings.batch)
        if events is None:  # further behind than the tail: read the store
            query = EventQuery(since=self.cursor, limit=self.d.settings.batch)
            events = await asyncio.to_thread(self.d.store.list_events, query)
        todo = [e for e in events if matches(self.sub, e)]
        while todo:
            todo = await self._send_window(todo)
        if events:
            self.cursor = max(self.cursor, events[-1].id)
        return bool(events)

    async def _send_window(self, todo: list[Event]) -> list[Event]:
        """Send the next events at once (pipelined, up to `pipeline`); what
        is left. The first one not delivered is retried alone (backoff),
        and the ones after it are sent again afterwards (at least once)."""
        pipeline = max(1, self.d.settings.pipeline)
        window = todo[: 1 if self._careful else pipeline]
        delivered, error = 0, None
        if len(window) > 1:
            delivered, error = await self.d.sender.send_many(self.sub, window)
        for event in window[:delivered]:
            self._pending.append(self._record(event, DeliveryStatus.DELIVERED, 1, ""))
            self.cursor = event.id
        if delivered == len(window):
            return todo[delivered:]
        event = window[delivered]
        result = await self._deliver(event, error.detail if error is not None else None)
        # After a failure, one at a time until `pipeline` events in a row were
        # delivered: a receiver in trouble is not sent events ahead.
        self._careful = pipeline if result.attempts > 1 or error is not None else \
            max(0, self._careful - 1)
        if result.status is DeliveryStatus.DELIVERED and result.attempts == 1:
            self._pending.append(result)
        else:  # failures are stored at once, with the cursor past them
            await asyncio.to_thread(self.d.store.save_deliveries, self.sub.id, [result],
                                    event.id)
        self.cursor = event.id
        return todo[delivered + 1:]

    async def _deliver(self, event: Event, failed: str | None = None) -> Delivery:
        """Send with retries (`failed`: the first attempt was made already
        and failed so); the final DELIVERED or DEAD record."""
        s, attempt = self.d.settings, 0
        while True:
            attempt += 1
            if attempt == 1 and failed is not None:
                error = failed
            else:
                try:
                    await self.d.sender.send(self.sub, event)
                except TemporaryError as exc:
                    error = exc.detail
                else:
                    return self._record(event, DeliveryStatus.DELIVERED, attempt, "")
            if attempt >= s.max_attempts:
                log.warning("webhook %s: event %d parked as a dead letter after %d "
                            "attempts: %s", self.sub.id, event.id, attempt, error)
                return self._record(event, DeliveryStatus.DEAD, attempt, error)
            retrying = self._record(event, DeliveryStatus.RETRYING, attempt, error)
            await asyncio.to_thread(self.d.store.save_deliveries, self.sub.id, [retrying])
            await self.d.clock.sleep(backoff_s(attempt, s, self.d.rng))

    def _record(self, event: Event, status: DeliveryStatus, attempts: int,
                error: str) -> Delivery:
        now = self.d.clock.now()
        if self.d.on_delivery is not None and status is not DeliveryStatus.RETRYING:
            self.d.on_delivery(event, status.value, now)
        return Delivery(self.sub.id, event.id, status, attempts, error, now)

    async def _redeliver(self) -> None:
        while self.redeliveries:
            event_id = self.redeliveries[0]
            query = EventQuery(since=event_id - 1, limit=1)
            found = await asyncio.to_thread(self.d.store.list_events, query)
            if found and found[0].id == event_id:
                result = await self._deliver(found[0])
                await asyncio.to_thread(self.d.store.save_deliveries, self.sub.id, [result])
            self.redeliveries.pop(0)
