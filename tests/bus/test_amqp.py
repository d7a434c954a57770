"""AMQP publishing through oslo.messaging with a real RabbitMQ and a real
oslo.messaging notification listener. Skipped when oslo.messaging is not
installed or no broker answers on 127.0.0.1:5672 (env VMHA_TEST_AMQP_URL
overrides the broker URL)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oslo_messaging as om
import pytest
import uvicorn
from webhook_receiver import free_port

from tiers import require_tier
from vmha.adapters.bus.amqp import OsloPublisher, RoutingSender, amqp_subscription
from vmha.adapters.bus.dispatcher import Dispatcher, DispatchSettings
from vmha.adapters.bus.webhook import WebhookSender
from vmha.adapters.store.sql import SqlStore
from vmha.adapters.system import SystemClock
from vmha.cli.server import build_controller
from vmha.config import Settings
from vmha.domain.model import Event, Severity, SubjectKind
from vmha.ports import DeliveryStatus

URL = os.environ.get("VMHA_TEST_AMQP_URL", "rabbit://guest:guest@127.0.0.1:5672/")


def _broker_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True, scope="module")
def _broker_ready() -> None:
    """`make test` starts RabbitMQ: a missing broker fails the amqp tier."""
    if "VMHA_TEST_AMQP_URL" not in os.environ and not _broker_up():
        require_tier("amqp", "no RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh "
                     "starts one; or set VMHA_TEST_AMQP_URL)")


class Endpoint:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _note(self, priority: str, publisher_id: str, event_type: str,
              payload: dict[str, Any]) -> None:
        with self.lock:
            self.got.append((priority, publisher_id, event_type, payload))

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self._note("INFO", publisher_id, event_type, payload)

    def error(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
              metadata: Any) -> None:
        self._note("ERROR", publisher_id, event_type, payload)

    def critical(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
                 metadata: Any) -> None:
        self._note("CRITICAL", publisher_id, event_type, payload)


@pytest.fixture
def bus() -> Iterator[tuple[str, str, Endpoint]]:
    """A throw-away exchange and topic with a listening oslo consumer."""
    from oslo_config import cfg

    exchange, topic = f"vmha_test_{secrets.token_hex(4)}", "vmha"
    endpoint = Endpoint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf = cfg.ConfigOpts()
        conf([], project="vmha-test-listener")
        transport = om.get_notification_transport(conf, url=URL)
        listener = om.get_notification_listener(
            transport, [om.Target(topic=topic, exchange=exchange)], [endpoint],
            executor="threading")
        listener.start()
    yield exchange, topic, endpoint
    listener.stop()
    listener.wait()
    transport.cleanup()


def test_events_reach_an_oslo_listener_in_order(
    store: SqlStore, bus: tuple[str, str, Endpoint]
) -> None:
    exchange, topic, endpoint = bus

    async def run() -> list[int]:
        clock = SystemClock()
        publisher = OsloPublisher(URL, exchange=exchange, topic=topic,
                                  publisher_id="vmha.ctl-1")
        sender = RoutingSender(WebhookSender(clock, timeout_s=2, allow_private=True),
                               publisher)
        store.create_subscription(amqp_subscription(exchange, topic, 0, clock.now()))
        settings = DispatchSettings(poll_s=0.005, refresh_s=0.05, checkpoint_s=0.02)
        dispatcher = Dispatcher(store, clock, sender, settings)
        task = asyncio.create_task(dispatcher.run())
        stored = await asyncio.to_thread(store.append_events, [
            Event("host.failed", "h1", 1.0, severity=Severity.CRITICAL, payload={"why": "bmc"}),
            Event("instance.crashed", "vm-1", 2.0, SubjectKind.INSTANCE, "p1",
                  Severity.ERROR, {"host": "h1"}),
            Event("host.up", "h2", 3.0),
        ])
        deadline = time.monotonic() + 10
        while len(endpoint.got) < 3:
            assert time.monotonic() < deadline, f"got only {endpoint.got}"
            await asyncio.sleep(0.01)
        while store.get_subscription("amqp").cursor != stored[-1].id:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await dispatcher.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.aclose()
        return [e.id for e in stored]

    ids = asyncio.run(run())
    assert [(p, t) for p, _, t, _ in endpoint.got] == [
        ("CRITICAL", "vmha.host.failed"), ("ERROR", "vmha.instance.crashed"),
        ("INFO", "vmha.host.up")]
    assert {pub for _, pub, _, _ in endpoint.got} == {"vmha.ctl-1"}
    assert [payload["id"] for *_, payload in endpoint.got] == ids
    assert endpoint.got[1][3]["host"] == "h1" and endpoint.got[1][3]["project"] == "p1"
    assert not store.list_deliveries("amqp", DeliveryStatus.DEAD)


def test_unreachable_broker_is_a_failed_delivery(store: SqlStore) -> None:
    async def run() -> None:
        publisher = OsloPublisher("rabbit://guest:guest@127.0.0.1:9/", retries=0)
        sub = amqp_subscription("notifications", "vmha", 0, 0.0)
        with pytest.raises(Exception, match="AMQP publish failed"):
            await publisher.send(sub, Event("host.up", "h1", 1.0, id=1))
        await publisher.aclose()

    asyncio.run(run())


class Proxy:
    """A TCP proxy to the broker that can be cut (an outage or a broker
    restart, as the publisher sees it) without touching the shared broker."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.links: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.links:
            writer.close()
        self.links.clear()
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self.links += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_broker_outage_mid_stream_loses_nothing(
    store: SqlStore, bus: tuple[str, str, Endpoint]
) -> None:
    exchange, topic, endpoint = bus

    async def run() -> list[int]:
        proxy = Proxy()
        await proxy.start()
        clock = SystemClock()
        publisher = OsloPublisher(f"rabbit://guest:guest@127.0.0.1:{proxy.port}/",
                                  exchange=exchange, topic=topic, retries=0)
        sender = RoutingSender(WebhookSender(clock, timeout_s=2, allow_private=True),
                               publisher)
        store.create_subscription(amqp_subscription(exchange, topic, 0, clock.now()))
        settings = DispatchSettings(poll_s=0.005, refresh_s=0.05, checkpoint_s=0.02,
                                    max_attempts=100, backoff_initial_s=0.05,
                                    backoff_max_s=0.2)
        dispatcher = Dispatcher(store, clock, sender, settings)
        task = asyncio.create_task(dispatcher.run())
        ids = [e.id for e in await asyncio.to_thread(
            store.append_events, [Event("host.up", f"h{i}", 1.0) for i in range(3)])]
        deadline = time.monotonic() + 15
        while len(endpoint.got) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await proxy.cut()  # the broker "goes away"
        ids += [e.id for e in await asyncio.to_thread(
            store.append_events, [Event("host.up", f"h{i}", 1.0) for i in range(3, 8)])]
        while not store.list_deliveries("amqp", DeliveryStatus.RETRYING):
            assert time.monotonic() < deadline, "no failed attempt while cut"
            await asyncio.sleep(0.01)
        await proxy.start()  # back, on the same port
        while len({p["id"] for *_, p in endpoint.got}) < len(ids):
            assert time.monotonic() < deadline, f"got {len(endpoint.got)}"
            await asyncio.sleep(0.02)
        await dispatcher.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.aclose()
        await proxy.cut()
        return ids

    ids = asyncio.run(run())
    got = [payload["id"] for *_, payload in endpoint.got]
    assert list(dict.fromkeys(got)) == ids  # nothing lost, in order


def test_the_service_publishes_when_amqp_url_is_set(
    tmp_path: Path, bus: tuple[str, str, Endpoint]
) -> None:
    exchange, topic, endpoint = bus
    settings = Settings.model_validate({
        "store": {"url": f"sqlite:///{tmp_path / 'vmha.db'}"},
        "heartbeat": {"enabled": False},
        "events": {"amqp_url": URL, "amqp_exchange": exchange, "amqp_topic": topic,
                   "amqp_publisher_id": "vmha.svc", "poll_interval_s": 0.01},
    })
    controller = build_controller(settings)
    server = uvicorn.Server(uvicorn.Config(controller.app, host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while not any(s.id == "amqp" for s in controller.store.list_subscriptions()):
            # made once this controller leads (just after startup)
            assert time.monotonic() < deadline, "no amqp subscription"
            time.sleep(0.01)
        sub = controller.store.get_subscription("amqp")
        assert sub.url == f"amqp:{exchange}/{topic}" and "guest" not in sub.url
        (stored,) = controller.store.append_events([Event("host.failed", "h7", 1.0)])
        while not endpoint.got:
            assert time.monotonic() < deadline, "nothing published"
            time.sleep(0.01)
        assert endpoint.got[0][1:3] == ("vmha.svc", "vmha.host.failed")
        assert endpoint.got[0][3]["id"] == stored.id
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        controller.close()
