"""End to end through the real controller service (`build_controller`,
uvicorn, the app's lifespan): a subscription made over the API receives a
signed event committed to the store, and `[events]` is validated."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from webhook_receiver import Receiver, free_port

from vmha.adapters.bus.webhook import verify
from vmha.cli.server import build_controller
from vmha.config import Settings, load_settings
from vmha.domain.model import Event
from vmha.errors import ConfigError

TOKEN = "svc-admin-token"
SECRET = "svc-secret-0123456789"


def test_subscription_over_the_api_gets_events_from_the_service(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "api": {"tokens": [{"token": TOKEN, "role": "admin"}]},
        "store": {"url": f"sqlite:///{tmp_path / 'vmha.db'}"},
        "heartbeat": {"enabled": False},
        "events": {"allow_private_destinations": True, "poll_interval_s": 0.01,
                   "refresh_s": 0.05},
    })
    controller = build_controller(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(controller.app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    received: list[bytes] = []

    async def receive() -> None:
        receiver = await Receiver().start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            while not server.started:
                await asyncio.sleep(0.01)
            made = await api.post("/v1/subscriptions", json={
                "url": receiver.url, "event_types": ["host.*"], "secret": SECRET})
            assert made.status_code == 201, made.text
            await asyncio.sleep(0.2)  # the dispatcher has loaded it
            stored = await asyncio.to_thread(
                controller.store.append_events,
                [Event("instance.crashed", "vm", 1.0), Event("host.failed", "h9", 1.0)])
            deadline = time.monotonic() + 5
            while not receiver.ids():
                assert time.monotonic() < deadline, "no delivery within 5 s"
                await asyncio.sleep(0.01)
            assert receiver.ids() == [stored[1].id]
            received.append(receiver.requests[0].body)
            assert verify(SECRET, receiver.requests[0].headers["vmha-signature"],
                          receiver.requests[0].body, time.time())
        await receiver.stop()

    try:
        asyncio.run(receive())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        controller.close()
    assert not thread.is_alive() and b'"host.failed"' in received[0]


def test_events_section_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "vmha.toml"
    path.write_text("[events]\nallow_private_destinations = true\nmax_attempts = 3\n")
    events = load_settings(path).events
    assert events.allow_private_destinations and events.max_attempts == 3
    assert events.backoff_initial_s == 1.0 and events.replay_window_s == 300
    path.write_text("[events]\nmax_attempts = 0\n")
    with pytest.raises(ConfigError, match=r"events\.max_attempts"):
        load_settings(path)
    path.write_text("[events]\nnope = 1\n")
    with pytest.raises(ConfigError, match=r"events\.nope"):
        load_settings(path)


def test_sigint_ends_open_sse_streams_and_the_server(tmp_path: Path) -> None:
    """`vmha serve` with an SSE client attached stops promptly on Ctrl-C
    (uvicorn waits for open responses; the service tells streams to end)."""
    port = free_port()
    config = tmp_path / "vmha.toml"
    config.write_text(
        f'[api]\nlisten = "127.0.0.1:{port}"\n[[api.tokens]]\ntoken = "{TOKEN}"\n'
        f'role = "admin"\n[store]\nurl = "sqlite:///{tmp_path / "vmha.db"}"\n'
        "[heartbeat]\nenabled = false\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vmha.cli.main import main; main()",
         "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.stream("GET", f"http://127.0.0.1:{port}/v1/events/stream",
                          headers=headers, timeout=10) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("retry:")
            proc.send_signal(signal.SIGINT)
            rest = list(lines)  # ends cleanly, no error
        assert ": keep-alive" not in rest
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"graceful shutdown exceeded" not in (proc.stderr.read() if proc.stderr else b"")
