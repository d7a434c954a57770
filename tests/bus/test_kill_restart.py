"""The outbox across a real crash: `vmha serve` is SIGKILLed while it
delivers, then started again on the same database. Every event reaches the
webhook in order; only events after the last stored cursor come twice (at
least once, receivers dedupe on the event id)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from webhook_receiver import Receiver, free_port

from vmha.adapters.fencing.secrets import SecretBox, generate_key
from vmha.adapters.store import open_store
from vmha.domain.model import Event

TOKEN = "kill-admin-token"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on its own event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    hook = Receiver(delay_s=0.01)
    asyncio.run_coroutine_threadsafe(hook.start(), loop).result(5)
    yield hook
    asyncio.run_coroutine_threadsafe(hook.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def serve(config: Path, port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`vmha serve` started and healthy; its output goes to `log` (else nowhere)."""
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from vmha.cli.main import main; main()",
             "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT,
        )

    def healthy() -> bool:
        assert proc.poll() is None, "vmha serve exited"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        return False

    until(healthy, 60, "vmha serve did not start")
    return proc


def test_sigkill_mid_delivery_then_restart_loses_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    port, db = free_port(), tmp_path / "vmha.db"
    config, key = tmp_path / "vmha.toml", generate_key()
    (tmp_path / "secret.key").write_text(key)
    config.write_text(
        f'[api]\nlisten = "127.0.0.1:{port}"\n[[api.tokens]]\ntoken = "{TOKEN}"\n'
        f'role = "admin"\n[store]\nurl = "sqlite:///{db}"\n[heartbeat]\nenabled = false\n'
        f'[fencing]\nsecret_key_file = "{tmp_path / "secret.key"}"\n'
        "[events]\nallow_private_destinations = true\npoll_interval_s = 0.01\n"
        "refresh_s = 0.05\ncheckpoint_s = 0.3\n"
    )
    first = serve(config, port)
    store = open_store(f"sqlite:///{db}", box=SecretBox(key))  # reads sealed secrets
    try:
        made = httpx.post(f"http://127.0.0.1:{port}/v1/subscriptions",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5,
                          json={"url": receiver.url, "event_types": ["*"],
                                "secret": "kill-test-secret-123"})
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        ids = [e.id for e in store.append_events(
            [Event("host.up", f"h{i}", 1.0) for i in range(80)])]
        until(lambda: len(receiver.ids()) >= 20, 10, "no deliveries before the kill")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        stopped_at = store.get_subscription(sid).cursor
        assert stopped_at < ids[-1]
        second = serve(config, port)
        try:
            until(lambda: set(receiver.ids()) >= set(ids), 20, "events missing after restart")
        finally:
            second.send_signal(signal.SIGINT)
            assert second.wait(10) == 0
        got = receiver.ids()
        assert list(dict.fromkeys(got)) == ids  # nothing lost, in order
        assert all(i > stopped_at for i in set(got) if got.count(i) > 1)
        assert store.get_subscription(sid).cursor == ids[-1]  # the clean stop stored it
    finally:
        if first.poll() is None:
            first.kill()
        store.close()
