"""`GET /v1/events/stream` over real HTTP (uvicorn in a thread, httpx):
frames, Last-Event-ID / since resume, project isolation, heartbeats, and
a stream that ends when its client goes away."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from vmha.adapters.system import SequentialIds, SystemClock
from vmha.api import create_app
from vmha.config import EventsConfig
from vmha.domain.model import Event, SubjectKind
from vmha.ports import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TOKENS: dict[str, str] = {}  # role -> token, from conftest's settings


@pytest.fixture
def server(app: FastAPI, store: Store) -> Iterator[str]:
    """The API (conftest's settings, a real clock, quick polls) on uvicorn."""
    settings = app.state.vmha.settings.model_copy(
        update={"events": EventsConfig(poll_interval_s=0.01, sse_heartbeat_s=0.3)}
    )
    TOKENS.update({t.role: t.secret() for t in settings.api.tokens})
    app = create_app(settings, store, SystemClock(), SequentialIds())
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=5)
    # Every stream ended once its client left: the server stopped promptly.
    assert not thread.is_alive()


def frames(lines: Iterator[str], count: int) -> list[dict[str, str]]:
    """The next `count` event frames (comments skipped)."""
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if "id" in current:
                out.append(current)
                if len(out) == count:
                    return out
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value
    raise AssertionError("stream ended early")


def emit(store: Store, *projects: str) -> list[Event]:
    kind = SubjectKind.INSTANCE
    return store.append_events(
        [Event("instance.crashed", f"vm-{p}", 1.0, kind, p) if p else
         Event("host.failed", "h1", 1.0) for p in projects]
    )


def auth(role: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}", **headers}


def test_resume_after_last_event_id_then_live_events(server: str, store: Store) -> None:
    first = emit(store, "p1", "", "p2")
    headers = auth("admin", **{"Last-Event-ID": str(first[0].id)})
    with httpx.stream("GET", f"{server}/v1/events/stream", headers=headers,
                      timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        got = frames(lines, 2)
        assert [int(f["id"]) for f in got] == [e.id for e in first[1:]]
        assert [f["event"] for f in got] == ["host.failed", "instance.crashed"]
        data = json.loads(got[1]["data"])
        assert data["specversion"] == "1.0" and data["id"] == str(first[2].id)
        later = emit(store, "p1")
        assert int(frames(lines, 1)[0]["id"]) == later[0].id


def test_since_and_default_start(server: str, store: Store) -> None:
    old = emit(store, "p1", "p1")
    url = f"{server}/v1/events/stream"
    with httpx.stream("GET", url, params={"since": old[0].id}, headers=auth("admin"),
                      timeout=5) as response:
        assert int(frames(response.iter_lines(), 1)[0]["id"]) == old[1].id
    with httpx.stream("GET", url, headers=auth("admin"), timeout=5) as response:
        lines = response.iter_lines()
        next(lines)  # the stream is open: only events from now on
        new = emit(store, "p2")
        assert int(frames(lines, 1)[0]["id"]) == new[0].id


def test_project_token_sees_only_its_project(server: str, store: Store) -> None:
    events = emit(store, "p2", "", "p1", "p2", "p1")
    with httpx.stream("GET", f"{server}/v1/events/stream", params={"since": 0},
                      headers=auth("project:p1"), timeout=5) as response:
        got = frames(response.iter_lines(), 2)
    assert [int(f["id"]) for f in got] == [events[2].id, events[4].id]
    assert all(json.loads(f["data"])["vmhaproject"] == "p1" for f in got)


def test_idle_stream_sends_heartbeat_comments(server: str) -> None:
    with httpx.stream("GET", f"{server}/v1/events/stream", headers=auth("viewer"),
                      timeout=5) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        started = time.monotonic()
        assert next(line for line in lines if line == ": keep-alive")
        assert 0.2 < time.monotonic() - started < 2.0


def test_bad_last_event_id_and_missing_token(server: str) -> None:
    url = f"{server}/v1/events/stream"
    bad = httpx.get(url, headers=auth("admin", **{"Last-Event-ID": "abc"}), timeout=5)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "header.Last-Event-ID"
    assert httpx.get(url, timeout=5).status_code == 401


def test_event_ids_and_type_filters_are_bounded(server: str) -> None:
    url = f"{server}/v1/events/stream"
    for huge in (str(2**63), str(10**18), "9" * 40, "", "5x", "-1"):
        bad = httpx.get(url, headers=auth("admin", **{"Last-Event-ID": huge}), timeout=5)
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == "header.Last-Event-ID"
    with httpx.stream("GET", url, timeout=5,
                      headers=auth("admin", **{"Last-Event-ID": str(10**18 - 1)})) as ok:
        assert ok.status_code == 200
    many = [("type", f"host.t{i}") for i in range(1000)]
    for path in ("/v1/events", "/v1/events/stream"):
        refused = httpx.get(f"{server}{path}", params=many, headers=auth("admin"), timeout=5)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "query.type"
    fifty = [("type", f"host.t{i}") for i in range(50)]
    assert httpx.get(f"{server}/v1/events", params=fifty, headers=auth("admin"),
                     timeout=5).status_code == 200
