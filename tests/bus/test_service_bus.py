"""The in-process bus (issue 13): in a real controller service a committed
event wakes the webhook dispatcher and the SSE streams at once, not at
their next poll. The poll is set to 10 s here, so anything that arrives
within a second came through the bus."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from webhook_receiver import Receiver, free_port

from vmha.adapters.bus.local import LocalBus
from vmha.cli.server import build_controller
from vmha.config import Settings
from vmha.domain.model import Event
from vmha.ports import EventQuery

TOKEN = "bus-admin-token"
SECRET = "bus-secret-0123456789"
POLL_S = 10.0


def test_a_commit_wakes_the_dispatcher_and_the_sse_stream(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "api": {"tokens": [{"token": TOKEN, "role": "admin"}]},
        "store": {"url": f"sqlite:///{tmp_path / 'vmha.db'}"},
        "heartbeat": {"enabled": False},
        "events": {"allow_private_destinations": True, "poll_interval_s": POLL_S,
                   "refresh_s": 0.05},
    })
    controller = build_controller(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(controller.app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    took: dict[str, float] = {}

    async def sse(api: httpx.AsyncClient, ready: asyncio.Event) -> None:
        async with api.stream("GET", "/v1/events/stream") as response:
            async for line in response.aiter_lines():
                if line.startswith(": vmha event stream"):
                    ready.set()
                if line.startswith("event: host.failed"):
                    took["sse"] = time.monotonic()
                    return

    async def run() -> None:
        receiver = await Receiver().start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            while not server.started:
                await asyncio.sleep(0.01)
            made = await api.post("/v1/subscriptions", json={
                "url": receiver.url, "event_types": ["host.*"], "secret": SECRET})
            assert made.status_code == 201, made.text
            ready = asyncio.Event()
            stream = asyncio.create_task(sse(api, ready))
            await asyncio.wait_for(ready.wait(), 10)
            await asyncio.sleep(0.5)  # the dispatcher loaded the subscription, went idle
            start = time.monotonic()
            await asyncio.to_thread(controller.store.append_events,
                                    [Event("host.failed", "h9", 1.0)])
            while not receiver.ids():
                assert time.monotonic() - start < 5, "no webhook within 5 s"
                await asyncio.sleep(0.005)
            took["webhook"] = time.monotonic()
            await asyncio.wait_for(stream, 5)
            for what in ("webhook", "sse"):  # sub-second here; the p99: bench/notify_latency.py
                assert took[what] - start < 2.0, (what, took[what] - start)
        await receiver.stop()

    try:
        asyncio.run(run())
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        controller.close()


def ev(event_id: int) -> Event:
    return Event("host.failed", f"h{event_id}", 1.0, id=event_id)


def test_the_bus_wakes_a_waiter_from_another_thread_and_times_out_otherwise() -> None:
    async def run() -> None:
        bus = LocalBus()
        bus.committed([ev(3)])  # before bind: only remembered
        bus.bind(asyncio.get_running_loop())
        start = time.monotonic()
        assert await bus.wait(after=2, timeout=5)  # 3 is newer: at once
        assert time.monotonic() - start < 4  # well before its 5 s timeout
        start = time.monotonic()
        assert not await bus.wait(after=3, timeout=0.2)  # nothing newer: the timeout
        assert 0.15 < time.monotonic() - start < 4
        threading.Timer(0.1, bus.committed, args=([ev(4)],)).start()
        start = time.monotonic()
        assert await bus.wait(after=3, timeout=5)
        assert time.monotonic() - start < 4 and bus.newest == 4  # woken, not timed out

    asyncio.run(run())


def test_the_bus_hands_over_events_only_when_it_holds_them_all() -> None:
    bus = LocalBus(keep=5)
    assert bus.since(0) == [] and bus.newest == 0
    bus.committed([ev(1), ev(2)])
    assert [e.id for e in bus.since(0) or []] == [1, 2]
    assert bus.since(2) == []
    bus.committed([ev(4)])  # 3: another process's, or not committed yet
    assert bus.since(2) is None  # read the store
    assert [e.id for e in bus.since(3) or []] == [4]
    bus.committed([ev(3)])  # committed after 4 by another thread of this process
    assert [e.id for e in bus.since(1) or []] == [2, 3, 4]
    bus.committed([ev(3)])  # twice: kept once
    bus.committed([ev(i) for i in range(5, 9)])  # 1-3 are dropped (keep=5)
    assert bus.since(2) is None and bus.newest == 8
    assert [e.id for e in bus.since(3) or []] == [4, 5, 6, 7, 8]
    bus.committed([ev(2)])  # older than what it keeps: ignored
    assert bus.since(3) is not None


def test_the_store_hands_its_commits_to_the_bus(tmp_path: Path) -> None:
    from vmha.adapters.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'vmha.db'}", migrate=True)
    try:
        bus = LocalBus()
        store.on_commit = bus.committed  # as vmha.controller.service wires it
        stored = store.append_events([Event("host.failed", "h1", 1.0),
                                      Event("host.up", "h2", 2.0)])
        assert bus.since(0) == stored
        assert store.list_events(EventQuery(since=0)) == stored
    finally:
        store.close()
