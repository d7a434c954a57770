"""The event reporter against a real local HTTP receiver: wire format, order,
retry while the controller is down, drop-oldest, inventory."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from agentkit import free_port
from receiver import Receiver

from vmha.agent.domains import DomainEvent, DomainView
from vmha.agent.report import EventReporter

UUID = "6f1c9e4e-7c1a-4d2e-9a51-0c7f00000001"


def event(i: int, kind: str = "started") -> DomainEvent:
    return DomainEvent(UUID, f"vm{i}", kind, "booted", i % 2 == 0, 1000.0 + i)


def reporter(port: int, **kw: object) -> EventReporter:
    return EventReporter(f"http://127.0.0.1:{port}", "host1", "tok", "00ff00ff00ff00ff",
                         **kw)  # type: ignore[arg-type]


def test_events_go_out_at_once_in_the_exact_wire_format() -> None:
    async def main() -> None:
        port = free_port()
        rx = Receiver(port)
        await rx.start()
        rep = reporter(port)
        rep.start()
        try:
            pushed = time.time()
            rep.push(event(0))
            await rx.wait_for(lambda: len(rx.events()) == 1, 2.0)
            req = rx.requests[0]
            assert req.at - pushed < 0.5  # no batching delay (first connect included)
            assert (req.method, req.path) == ("POST", "/v1/agents/host1/events")
            assert req.headers["authorization"] == "Bearer tok"
            assert req.body == {"boot_id": "00ff00ff00ff00ff", "events": [
                {"instance": UUID, "name": "vm0", "kind": "started", "detail": "booted",
                 "requested": True, "time": 1000.0}]}
            for i in range(1, 50):
                rep.push(event(i))
            await rx.wait_for(lambda: rep.pending == 0, 3.0)
            assert [e["name"] for e in rx.events()] == [f"vm{i}" for i in range(50)]
            assert rep.pending == 0 and rep.metrics["events_sent"] == 50
        finally:
            await rep.stop()
            await rx.stop()

    asyncio.run(main())


def test_while_the_controller_is_down_events_wait_and_keep_their_order() -> None:
    async def main() -> None:
        port = free_port()
        rx = Receiver(port)
        rep = reporter(port)
        rep.start()
        try:
            for i in range(5):
                rep.push(event(i))
            await asyncio.sleep(0.5)  # connection refused: a few retries
            assert rep.pending == 5 and rep.metrics["failures"] >= 1
            await rx.start()
            rx.status = 503  # up but failing: still kept
            await rx.wait_for(lambda: len(rx.requests) >= 1, 5.0)
            assert rep.pending == 5
            rx.status = None
            rep.push(event(5))
            await rx.wait_for(lambda: rep.pending == 0, 12.0)
            delivered = [e["name"] for r in rx.requests if r.path.endswith("/events")
                         and r.at >= rx.requests[-1].at for e in r.body["events"]]
            assert delivered == [f"vm{i}" for i in range(6)]
        finally:
            await rep.stop()
            await rx.stop()

    asyncio.run(main())


def test_a_full_queue_drops_the_oldest_and_says_how_many(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        port = free_port()
        rx = Receiver(port)
        rep = reporter(port, queue_max=5)
        rep.start()
        try:
            for i in range(8):
                rep.push(event(i))
            assert rep.pending == 5 and rep.metrics["events_dropped"] == 3
            await asyncio.sleep(0.3)
            await rx.start()
            await rx.wait_for(lambda: rep.pending == 0, 12.0)
            assert [e["name"] for e in rx.events()] == [f"vm{i}" for i in range(3, 8)]
        finally:
            await rep.stop()
            await rx.stop()

    with caplog.at_level(logging.WARNING, logger="vmha.agent.report"):
        asyncio.run(main())
    assert "dropped the 3 oldest domain events" in caplog.text


def test_inventory_is_sent_at_start_on_request_and_periodically() -> None:
    views = [DomainView(UUID, "vm1", "running", "booted")]
    calls = 0

    async def inventory() -> list[DomainView]:
        nonlocal calls
        calls += 1
        return views

    async def main() -> None:
        port = free_port()
        rx = Receiver(port)
        await rx.start()
        rep = reporter(port, inventory=inventory, inventory_interval_s=0.3)
        rep.start()
        try:
            await rx.wait_for(lambda: len(rx.inventories()) >= 1, 2.0)
            first = rx.inventories()[0]
            assert (first.method, first.path) == ("PUT", "/v1/agents/host1/inventory")
            assert first.body["boot_id"] == "00ff00ff00ff00ff"
            assert first.body["domains"] == [{"uuid": UUID, "name": "vm1", "state": "running",
                                              "reason": "booted"}]
            assert abs(first.body["time"] - time.time()) < 5
            await rx.wait_for(lambda: len(rx.inventories()) >= 3, 2.0)  # periodic
            await rx.stop()
            await asyncio.sleep(0.5)  # the periodic send fails: resent after recovery
            before = len(rx.inventories())
            await rx.start()
            rep.push(event(1))
            await rx.wait_for(lambda: len(rx.inventories()) > before, 12.0)
            last_event = max(r.at for r in rx.requests if r.path.endswith("/events"))
            assert rx.inventories()[-1].at >= last_event  # events first, then the state
        finally:
            await rep.stop()
            await rx.stop()

    asyncio.run(main())


def test_a_controller_that_is_down_or_has_no_leader_hands_over_to_the_next() -> None:
    async def main() -> None:
        down, busy, up = free_port(), free_port(), free_port()
        rx_busy, rx_up = Receiver(busy), Receiver(up)
        await rx_busy.start()
        await rx_up.start()
        rx_busy.status = 503  # a follower without a leader to forward to
        rep = EventReporter([f"http://127.0.0.1:{p}" for p in (down, busy, up)], "host1",
                            "tok", "00ff00ff00ff00ff")
        rep.start()
        try:
            started = time.monotonic()
            rep.push(event(0))
            await rx_up.wait_for(lambda: len(rx_up.events()) == 1, 2.0)
            assert time.monotonic() - started < 1.0  # at once, not after a backoff
            assert len(rx_busy.requests) == 1 and rep.metrics["failures"] == 0
            rep.push(event(1))  # sticks with the one that answered
            await rx_up.wait_for(lambda: len(rx_up.events()) == 2, 2.0)
            assert len(rx_busy.requests) == 1
        finally:
            await rep.stop()
            await rx_busy.stop()
            await rx_up.stop()

    asyncio.run(main())
