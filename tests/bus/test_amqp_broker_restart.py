"""A real RabbitMQ broker restart while `vmha serve` publishes: nothing lost.

A private RabbitMQ node (tests/bus/rabbit_node.py; never the machine's
shared broker) carries vmha's oslo notifications to a real oslo.messaging
notification listener. Events are committed to the store at a steady pace;
mid-stream the broker is stopped (SIGTERM, a clean shutdown), events keep
being committed while it is down, then it is started again on the same
data directory. Every event id must reach the listener, first copies in
commit order (at least once: duplicates are allowed and counted)."""

from __future__ import annotations

import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oslo_messaging as om
import pytest
from rabbit_node import RabbitNode, available, free_low_port
from test_kill_restart import serve, until

from tiers import require_tier
from vmha.adapters.store import open_store
from vmha.domain.model import Event

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _node_ready() -> None:
    require_tier("amqp", available())
TOKEN = "amqp-restart-admin-token"
EXCHANGE, TOPIC = "vmha_restart_test", "vmha"


class Endpoint:
    """Records the event id of every notification, in arrival order."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        assert event_type == "vmha.host.up"
        with self.lock:
            self.ids.append(int(payload["id"]))

    def got(self) -> list[int]:
        with self.lock:
            return list(self.ids)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RabbitNode]:
    base = tmp_path / "rabbit"
    base.mkdir()
    rabbit = RabbitNode(base)
    rabbit.start()
    yield rabbit
    rabbit.close()


@pytest.fixture
def endpoint(node: RabbitNode) -> Iterator[Endpoint]:
    from oslo_config import cfg

    got = Endpoint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf = cfg.ConfigOpts()
        conf([], project="vmha-restart-listener")
        transport = om.get_notification_transport(conf, url=node.url)
        # Reconnect every second while the broker is down (default backs off to 30 s).
        conf.set_override("rabbit_retry_backoff", 0, group="oslo_messaging_rabbit")
        listener = om.get_notification_listener(
            transport, [om.Target(topic=TOPIC, exchange=EXCHANGE)], [got],
            executor="threading")
        listener.start()
    yield got
    listener.stop()
    listener.wait()
    transport.cleanup()


def test_broker_restart_mid_stream_loses_nothing(
    tmp_path: Path, node: RabbitNode, endpoint: Endpoint
) -> None:
    port, db = free_low_port(), tmp_path / "vmha.db"
    config = tmp_path / "vmha.toml"
    config.write_text(
        f'[api]\nlisten = "127.0.0.1:{port}"\n[[api.tokens]]\ntoken = "{TOKEN}"\n'
        f'role = "admin"\n[store]\nurl = "sqlite:///{db}"\n[heartbeat]\nenabled = false\n'
        f'[events]\namqp_url = "{node.url}"\namqp_exchange = "{EXCHANGE}"\n'
        f'amqp_topic = "{TOPIC}"\npoll_interval_s = 0.01\nrefresh_s = 0.1\n'
        "max_attempts = 100\nbackoff_initial_s = 0.1\nbackoff_max_s = 0.5\n"
    )
    log = tmp_path / "serve.log"
    controller = serve(config, port, log)
    store = open_store(f"sqlite:///{db}")
    ids: list[int] = []

    def commit(count: int, every_s: float) -> None:
        for _ in range(count):
            (event,) = store.append_events([Event("host.up", f"h{len(ids)}", time.time())])
            ids.append(event.id)
            time.sleep(every_s)

    try:
        commit(20, 0.01)
        until(lambda: set(endpoint.got()) >= set(ids), 20, "no notifications before the stop")
        writer = threading.Thread(target=commit, args=(300, 0.02), daemon=True)
        writer.start()  # ~6 s of events, through the outage
        time.sleep(0.5)
        stopped_s = node.stop()
        during = len(ids)
        time.sleep(1.0)
        restarted_s = node.start()
        writer.join(30)
        assert len(ids) > during + 10, "no events were committed while the broker was down"
        try:
            until(lambda: set(endpoint.got()) >= set(ids), 90, "")
        except AssertionError:
            missing = sorted(set(ids) - set(endpoint.got()))
            amqp = [line for line in log.read_text(errors="replace").splitlines()
                    if "amqp" in line.lower() or "dead" in line.lower()]
            raise AssertionError(
                f"{len(missing)} of {len(ids)} events missing 90 s after the broker restart "
                f"(stopped in {stopped_s:.1f} s, back in {restarted_s:.1f} s), first "
                f"{missing[:10]}; the controller's amqp lines:\n" + "\n".join(amqp[-30:])
            ) from None
    finally:
        controller.send_signal(signal.SIGINT)
        controller.wait(15)
        store.close()

    got = endpoint.got()
    assert not set(ids) - set(got)  # nothing lost
    assert list(dict.fromkeys(got)) == ids  # first copies in commit order
    duplicates = len(got) - len(set(got))
    print(f"\n{len(ids)} events, broker stopped in {stopped_s:.1f} s and back in "
          f"{restarted_s:.1f} s, {duplicates} duplicates")
