"""A real `vmha serve` against 300 MB request bodies (issue 11, item 6).

The body limit ([api] max_body_bytes) and the token are checked before the
body is read or parsed: a declared oversized body is refused at once, a
chunked one as soon as it passes the limit, an unauthenticated one before
a byte of it is read. The controller's memory stays bounded and /healthz
keeps answering while uploads go on. (bench/request_limits.py measures
/healthz latency under such uploads.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from live_server import ADMIN, LiveServer, rss_kib, upload

MB = 1024 * 1024
BIG = 300 * MB


@pytest.fixture
def server(tmp_path: Path) -> LiveServer:
    live = LiveServer(tmp_path)
    live.start()
    yield live  # type: ignore[misc]
    live.stop()


@pytest.mark.slow
def test_300_mb_bodies_cost_little_and_healthz_keeps_answering(server: LiveServer) -> None:
    assert server.proc is not None
    base_kib = rss_kib(server.proc.pid)
    cases = [
        (None, False, 401), (None, True, 401),  # unauthenticated: the body is never read
        (ADMIN, False, 413), (ADMIN, True, 413),  # declared, then chunked, over the limit
    ]
    for token, chunked, wanted in cases:
        status, sent = upload(server.port, "/v1/instances", BIG, token=token, chunked=chunked)
        assert status == wanted, (token, chunked, status, sent)
        assert sent < 64 * MB, (token, chunked, sent)  # refused long before 300 MB
    # Parallel uploads while /healthz is asked: it answers every time.
    stop = threading.Event()

    def uploads(token: str | None) -> None:
        while not stop.is_set():
            upload(server.port, "/v1/instances", BIG, token=token, chunked=True)

    workers = [threading.Thread(target=uploads, args=(t,)) for t in (None, ADMIN, None, ADMIN)]
    for w in workers:
        w.start()
    try:
        for _ in range(20):
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    peak_kib = rss_kib(server.proc.pid, "VmHWM")
    assert peak_kib - base_kib < 64 * 1024, (base_kib, peak_kib)
    # A body within the limit (3 MiB of JSON whitespace) still works.
    body = b'{"name": "s1"' + b" " * (3 * MB) + b"}"
    made = httpx.post(f"{server.url}/v1/segments", content=body, timeout=10,
                      headers={"Content-Type": "application/json",
                               "Authorization": f"Bearer {ADMIN}"})
    assert made.status_code == 201, made.text
