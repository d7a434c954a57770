"""The webhook dispatcher against real local HTTP receivers and a real
SQLite store: retries keep order, a slow receiver blocks only itself, a
down receiver's events become dead letters that can be re-sent, redirects
are not followed, and a restarted dispatcher resumes from the stored
cursor (at least once, in order)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
from webhook_receiver import Receiver

from vmha.adapters.bus.dispatcher import Dispatcher, DispatchSettings, _Tail, backoff_s
from vmha.adapters.bus.webhook import DeliveryFailed, WebhookSender, verify
from vmha.adapters.store.sql import SqlStore
from vmha.adapters.system import SystemClock
from vmha.domain.model import Event, SubjectKind
from vmha.errors import TemporaryError
from vmha.ports import Delivery, DeliveryStatus, Subscription

# pipeline 1: one request in flight, the strict order these tests check
FAST = DispatchSettings(poll_s=0.005, refresh_s=0.03, checkpoint_s=0.02, batch=10,
                        tail_max=15, max_attempts=3, pipeline=1,
                        backoff_initial_s=0.01, backoff_max_s=0.04, jitter=0.5)
SECRET = "a-secret-of-16-chars"


@asynccontextmanager
async def dispatching(store: SqlStore, settings: DispatchSettings = FAST
                      ) -> AsyncIterator[Dispatcher]:
    clock = SystemClock()
    sender = WebhookSender(clock, timeout_s=2.0, allow_private=True)
    dispatcher = Dispatcher(store, clock, sender, settings, random.Random(7))
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.aclose()


def subscribe(store: SqlStore, sid: str, url: str, types: tuple[str, ...] = ("*",),
              **kw: object) -> Subscription:
    return store.create_subscription(Subscription(
        id=sid, url=url, secret=SECRET, event_types=types, **kw))  # type: ignore[arg-type]


async def emit(store: SqlStore, n: int, type_: str = "instance.crashed",
               project: str = "p1") -> list[int]:
    events = [Event(type_, f"vm-{i}", time.time(), SubjectKind.INSTANCE, project,
                    payload={"n": i}) for i in range(n)]
    stored = await asyncio.to_thread(store.append_events, events)
    return [e.id for e in stored]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_backoff_grows_is_capped_and_jittered() -> None:
    s = DispatchSettings(backoff_initial_s=1.0, backoff_max_s=10.0, jitter=0.2)
    rng = random.Random(1)
    waits = [backoff_s(n, s, rng) for n in range(1, 7)]
    for n, wait in enumerate(waits, start=1):
        base = min(10.0, 2.0 ** (n - 1))
        assert 0.8 * base <= wait <= 1.2 * base
    assert len({round(w / min(10.0, 2.0 ** i), 6) for i, w in enumerate(waits)}) > 1
    assert backoff_s(3, s, random.Random(5)) == backoff_s(3, s, random.Random(5))


def test_failing_receiver_gets_every_event_in_order_signed(store: SqlStore) -> None:
    async def run() -> None:
        receiver = await Receiver(fail_first=2).start()
        subscribe(store, "s1", receiver.url)
        async with dispatching(store):
            ids = await emit(store, 5)
            await until(lambda: receiver.ids() == ids)
            await until(lambda: store.get_subscription("s1").cursor == ids[-1])
        await receiver.stop()
        assert [int(r.event["id"]) for r in receiver.requests] == [ids[0]] * 3 + ids[1:]
        for r in receiver.requests:
            assert verify(SECRET, r.headers["vmha-signature"], r.body, now=time.time())
            assert r.headers["content-type"] == "application/cloudevents+json"
        first = next(d for d in store.list_deliveries("s1") if d.event_id == ids[0])
        assert (first.status, first.attempts) == (DeliveryStatus.DELIVERED, 3)
        assert first.last_error == ""

    asyncio.run(run())


def test_a_pipelined_backlog_gets_every_event_at_least_once(store: SqlStore) -> None:
    """`pipeline` 8: a backlog goes out 8 requests at a time; the one the
    receiver fails is retried alone, the ones after it are sent again."""

    async def run() -> None:
        receiver = await Receiver(fail_first=1).start()
        subscribe(store, "s1", receiver.url)
        async with dispatching(store, dataclasses.replace(FAST, pipeline=8)):
            ids = await emit(store, 10)
            await until(lambda: set(receiver.ids()) == set(ids))
            await until(lambda: store.get_subscription("s1").cursor == ids[-1])
        await receiver.stop()
        got = [int(r.event["id"]) for r in receiver.requests]
        assert got[0] == ids[0] and got.count(ids[0]) == 2  # failed once, then retried
        assert receiver.ids()[-len(ids[1:]):] == ids[1:]  # the rest again, in order
        first = next(d for d in store.list_deliveries("s1") if d.event_id == ids[0])
        assert (first.status, first.attempts) == (DeliveryStatus.DELIVERED, 2)

    asyncio.run(run())


class WindowSender:
    """Records the requests written at once; refuses the first attempt of
    the events in `refuse`."""

    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.windows: list[list[int]] = []

    async def send(self, subscription: Subscription, event: Event) -> None:
        _, error = await self.send_many(subscription, [event])
        if error is not None:
            raise error

    async def send_many(self, subscription: Subscription, events: Sequence[Event],
                        ) -> tuple[int, TemporaryError | None]:
        self.windows.append([e.id for e in events])
        for n, event in enumerate(events):
            if event.id in self.refuse:
                self.refuse.discard(event.id)
                return n, DeliveryFailed("HTTP 503: busy")
        return len(events), None


def test_after_a_failure_a_backlog_goes_one_at_a_time_for_a_while(store: SqlStore) -> None:
    """pipeline 4: the first backlog goes 4 at a time; after event 3 is
    refused, 4 events go alone (the receiver is in trouble), then windows
    of 4 again."""

    async def run() -> None:
        subscribe(store, "s1", "http://127.0.0.1:9/hook")
        ids = await emit(store, 16)
        sender = WindowSender(refuse={ids[2]})
        clock = SystemClock()
        dispatcher = Dispatcher(store, clock, sender,
                                dataclasses.replace(FAST, pipeline=4, batch=20, tail_max=50),
                                random.Random(7))
        task = asyncio.create_task(dispatcher.run())
        try:
            await until(lambda: bool(sender.windows) and sender.windows[-1][-1] == ids[-1])
        finally:
            await dispatcher.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        at = [[ids.index(i) for i in w] for w in sender.windows]
        assert at == [[0, 1, 2, 3], [2], [3], [4], [5], [6], [7, 8, 9, 10],
                      [11, 12, 13, 14], [15]]

    asyncio.run(run())


def test_a_stop_while_subscriptions_are_read_starts_no_worker(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh that was reading the subscriptions when stop() ran starts
    no worker afterwards: it would begin at the stored cursor and send
    again what the stopped worker had sent (seen as a backlog delivered
    twice at the end of a test)."""
    subscribe(store, "s1", "http://127.0.0.1:9/hook")
    reading, release = threading.Event(), threading.Event()
    real = store.list_subscriptions

    def held() -> list[Subscription]:
        reading.set()
        release.wait(5.0)
        return real()

    monkeypatch.setattr(store, "list_subscriptions", held)

    async def run() -> None:
        dispatcher = Dispatcher(store, SystemClock(), WindowSender(set()), FAST,
                                random.Random(7))
        refresh = asyncio.create_task(dispatcher.refresh())
        assert await asyncio.to_thread(reading.wait, 5.0)
        await dispatcher.stop()
        release.set()
        await refresh
        assert dispatcher.workers == {}

    asyncio.run(run())


def test_slow_receiver_blocks_only_itself(store: SqlStore) -> None:
    async def run() -> None:
        slow = await Receiver(delay_s=0.4).start()
        fast = await Receiver().start()
        subscribe(store, "slow", slow.url)
        subscribe(store, "fast", fast.url)
        async with dispatching(store):
            await asyncio.sleep(0.05)  # both workers started
            ids = await emit(store, 4)
            await until(lambda: fast.ids() == ids, timeout=1.0)
            assert len(slow.requests) <= 1
            await until(lambda: slow.ids() == ids, timeout=5.0)
        await slow.stop()
        await fast.stop()

    asyncio.run(run())


def test_down_receiver_dead_letters_then_redelivery(store: SqlStore) -> None:
    async def run() -> None:
        receiver = Receiver()  # not listening yet: connection refused
        subscribe(store, "s1", receiver.url)
        async with dispatching(store):
            ids = await emit(store, 2)
            await until(lambda: len(store.list_deliveries("s1", DeliveryStatus.DEAD)) == 2)
            assert store.get_subscription("s1").cursor == ids[-1]
            dead = store.list_deliveries("s1", DeliveryStatus.DEAD)
            assert all(d.attempts == FAST.max_attempts and "Connect" in d.last_error
                       for d in dead)
            await receiver.start()
            later = await emit(store, 1)
            await until(lambda: receiver.ids() == later)  # the subscription moved on
            store.save_deliveries("s1", [Delivery("s1", ids[0], DeliveryStatus.REDELIVER, 3)])
            await until(lambda: receiver.ids() == [*later, ids[0]])
            await until(lambda: not store.list_deliveries("s1", DeliveryStatus.REDELIVER))
        await receiver.stop()
        statuses = {d.event_id: d.status for d in store.list_deliveries("s1")}
        assert statuses == {ids[0]: DeliveryStatus.DELIVERED, ids[1]: DeliveryStatus.DEAD,
                            later[0]: DeliveryStatus.DELIVERED}

    asyncio.run(run())


def test_redirects_are_not_followed(store: SqlStore) -> None:
    async def run() -> None:
        receiver = await Receiver(status=302, location="http://169.254.169.254/").start()
        subscribe(store, "s1", receiver.url)
        async with dispatching(store):
            ids = await emit(store, 1)
            await until(lambda: bool(store.list_deliveries("s1", DeliveryStatus.DEAD)))
        await receiver.stop()
        (dead,) = store.list_deliveries("s1")
        assert dead.event_id == ids[0] and "redirect" in dead.last_error
        assert len(receiver.requests) == FAST.max_attempts

    asyncio.run(run())


def test_filters_select_events_and_the_cursor_passes_the_rest(store: SqlStore) -> None:
    async def run() -> None:
        receiver = await Receiver().start()
        subscribe(store, "s1", receiver.url, ("host.*", "instance.crashed"), project="p1")
        async with dispatching(store):
            wanted = await emit(store, 2, "instance.crashed", "p1")
            await emit(store, 2, "instance.crashed", "p2")
            await emit(store, 1, "job.done", "p1")
            last = await emit(store, 1, "host.failed", "p1")
            await until(lambda: receiver.ids() == [*wanted, *last])
            await until(lambda: store.get_subscription("s1").cursor == last[0])
        await receiver.stop()

    asyncio.run(run())


@pytest.mark.parametrize("killed", [False, True], ids=["clean-stop", "killed"])
def test_restarted_dispatcher_resumes_from_the_stored_cursor(
    store: SqlStore, killed: bool
) -> None:
    async def run() -> None:
        receiver = await Receiver(delay_s=0.005).start()
        subscribe(store, "s1", receiver.url)
        ids = await emit(store, 40)
        # Killed: no checkpoint ever ran, so everything sent is sent again.
        settings = dataclasses.replace(FAST, checkpoint_s=60.0) if killed else FAST
        async with dispatching(store, settings) as first:
            await until(lambda: len(receiver.ids()) >= 12)
            if killed:  # no final checkpoint: as if the process died
                for worker in first.workers.values():
                    assert worker.task is not None
                    worker.task.cancel()
                first.workers.clear()
        stopped_at = store.get_subscription("s1").cursor
        assert stopped_at < ids[-1]  # really stopped mid-stream
        ids += await emit(store, 20)
        async with dispatching(store):
            await until(lambda: set(receiver.ids()) >= set(ids))
        await receiver.stop()
        got = receiver.ids()
        assert list(dict.fromkeys(got)) == ids  # nothing lost, in order
        # Events up to the stored cursor are never sent again; a clean stop
        # re-sends at most the one POST that was in flight.
        assert all(i > stopped_at for i in set(got) if got.count(i) > 1)
        if not killed:
            assert len(got) - len(ids) <= 1
        else:
            assert len(got) > len(ids)  # the unsaved progress came again

    asyncio.run(run())


def test_tail_serves_recent_events_and_refuses_older_cursors() -> None:
    tail = _Tail(max_len=3)
    assert tail.after(0, 10) is None  # not started
    tail.begin(10)
    assert tail.after(10, 10) == []
    tail.extend([Event("host.up", "h", 1.0, id=i) for i in range(11, 16)])
    assert tail.start == 12 and tail.head == 15
    assert [e.id for e in tail.after(12, 10) or []] == [13, 14, 15]
    assert [e.id for e in tail.after(13, 1) or []] == [14]
    assert tail.after(11, 10) is None  # 12 was dropped: read the store
