"""The webhook dispatcher: reads the outbox in order and delivers every
event to every matching subscription, at least once.

Design (docs/events.md has the user-facing version):
- One *tail reader* polls the outbox every `poll_s` for events after the
  newest one it has (one cheap indexed query, whatever the number of
  subscriptions), keeps the most recent `tail_max` events in memory and
  wakes the workers. It also reloads the subscriptions and redelivery
  requests every `refresh_s`, and stores every worker's progress every
  `checkpoint_s` (one writer: workers never wait on the database to send).
- One *worker* per subscription, with its own cursor (stored in the
  subscription row): it takes the events after its cursor in id order
  (from the tail, or from the store when it is further behind), delivers
  the matching ones one at a time (so order is kept per subscription, and
  a failing receiver blocks only its own worker).
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

Used by `vmha.cli.service` (as one lifespan task) and the benchmark. It
must not decide anything about recovery; it only moves events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from vmha.adapters.store.query import type_matches
from vmha.domain.model import Event
from vmha.errors import NotFound, TemporaryError, VmhaError
from vmha.ports import Clock, Delivery, DeliveryStatus, EventQuery, Store, Subscription

log = logging.getLogger("vmha.bus")
KEEP_PER_CHECKPOINT = 10  # successful deliveries recorded per checkpoint


@dataclass(frozen=True)
class DispatchSettings:
    """Tunables of the dispatcher (from `[events]` in vmha.toml)."""

    poll_s: float = 0.05
    refresh_s: float = 1.0
    checkpoint_s: float = 0.25
    batch: int = 200
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


def matches(subscription: Subscription, event: Event) -> bool:
    """Whether `event` passes the subscription's type, subject and project filters."""
    if not type_matches(event.type, subscription.event_types):
        return False
    if subscription.subject is not None and event.subject != subscription.subject:
        return False
    return subscription.project is None or event.project == subscription.project


def backoff_s(attempt: int, settings: DispatchSettings, rng: random.Random) -> float:
    """The wait after failed attempt number `attempt` (1-based)."""
    base = min(settings.backoff_max_s, settings.backoff_initial_s * 2.0 ** (attempt - 1))
    return base * (1 + settings.jitter * rng.uniform(-1.0, 1.0))


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
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.clock = clock
        self.sender = sender
        self.settings = settings or DispatchSettings()
        self.rng = rng or random.Random()
        self.tail = _Tail(self.settings.tail_max)
        self.workers: dict[str, _Worker] = {}
        self._stopping = False

    async def run(self) -> None:
        """Read the tail and keep one worker per subscription, until stopped."""
        next_refresh = next_checkpoint = 0.0
        try:
            while not self._stopping:
                try:
                    await self.read_tail()
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
                await self.clock.sleep(self.settings.poll_s)
        finally:
            await self._stop_workers(list(self.workers))

    async def stop(self) -> None:
        self._stopping = True
        await self._stop_workers(list(self.workers))

    async def read_tail(self) -> None:
        if self.tail.start is None:
            self.tail.begin(await asyncio.to_thread(self.store.last_event_id))
            return
        query = EventQuery(since=self.tail.head, limit=self.settings.tail_max)
        self.tail.extend(await asyncio.to_thread(self.store.list_events, query))

    async def checkpoint(self) -> None:
        """Store every worker's cursor and recent deliveries."""
        for worker in list(self.workers.values()):
            with contextlib.suppress(NotFound):
                await worker.checkpoint()

    async def refresh(self) -> None:
        """Start workers for new subscriptions, stop those of deleted ones,
        and hand out redelivery requests."""
        subs = await asyncio.to_thread(self.store.list_subscriptions)
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

    async def checkpoint(self) -> None:
        if self.cursor == self._saved and not self._pending:
            return
        cursor, pending = self.cursor, list(self._pending)
        self._pending.clear()
        await asyncio.to_thread(self.d.store.save_deliveries, self.sub.id, pending, cursor)
        self._saved = max(self._saved, cursor)

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
        for event in events:
            if matches(self.sub, event):
                result = await self._deliver(event)
                if result.status is DeliveryStatus.DELIVERED and result.attempts == 1:
                    self._pending.append(result)
                else:  # failures are stored at once, with the cursor past them
                    await asyncio.to_thread(
                        self.d.store.save_deliveries, self.sub.id, [result], event.id
                    )
            self.cursor = event.id
        return bool(events)

    async def _deliver(self, event: Event) -> Delivery:
        """Send with retries; the final DELIVERED or DEAD record."""
        s, attempt = self.d.settings, 0
        while True:
            attempt += 1
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
        return Delivery(self.sub.id, event.id, status, attempts, error, self.d.clock.now())

    async def _redeliver(self) -> None:
        while self.redeliveries:
            event_id = self.redeliveries[0]
            query = EventQuery(since=event_id - 1, limit=1)
            found = await asyncio.to_thread(self.d.store.list_events, query)
            if found and found[0].id == event_id:
                result = await self._deliver(found[0])
                await asyncio.to_thread(self.d.store.save_deliveries, self.sub.id, [result])
            self.redeliveries.pop(0)
