"""The prober: real http servers, a stand-in guest agent, real time (short intervals)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from vmha.adapters.system import SystemClock
from vmha.agent.domains import DomainEvent, DomainView
from vmha.agent.guestagent import ExecResult
from vmha.agent.prober import Prober
from vmha.agent.probes import parse_document
from vmha.errors import TemporaryError

U1 = "6f1d3a52-8c47-4e0b-9a1e-3b5c7d9e0f21"
U2 = "0b6a1c1e-2d3f-4a5b-8c7d-9e0f1a2b3c4d"


class App:
    """A local HTTP application whose answer a test changes."""

    def __init__(self) -> None:
        self.status = "200 OK"
        self.hang = False
        self.hits: list[float] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/health"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits.append(time.monotonic())
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if self.hang:
            await asyncio.sleep(30)
        writer.write(f"HTTP/1.1 {self.status}\r\nContent-Length: 2\r\n\r\nok".encode())
        writer.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


class FakeGuestAgent:
    """What `GuestAgent` offers, per domain: a channel, pings, commands."""

    def __init__(self) -> None:
        self.channels: dict[str, str | None] = {}
        self.ping_ok: dict[str, bool] = {}
        self.hung: set[str] = set()
        self.exit_codes: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []

    async def channel(self, uuid: str) -> str | None:
        return self.channels.get(uuid, "connected")

    async def ping(self, uuid: str, timeout_s: float) -> None:
        self.calls.append((uuid, "ping"))
        if uuid in self.hung:
            await asyncio.sleep(3600)
        if not self.ping_ok.get(uuid, True):
            raise TemporaryError(f"guest agent of {uuid} did not answer guest-ping")

    async def run(self, uuid: str, argv: Any, timeout_s: float, output_max: int = 4096
                  ) -> ExecResult:
        self.calls.append((uuid, "exec"))
        if uuid in self.hung:
            await asyncio.sleep(3600)
        code = self.exit_codes.get(uuid, 0)
        return ExecResult(code, None, "", "" if code == 0 else "app down\n", False, False, 0.01)


def entry(uuid: str, name: str, probes: list[dict[str, Any]],
          ping: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"domain": uuid, "instance": f"id-{name}", "name": name, "probes": probes,
            "guest_ping": ping}


def running(*uuids: str) -> list[DomainView]:
    return [DomainView(u, f"d{i}", "running", "booted") for i, u in enumerate(uuids)]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def run(tmp_path: Path, body: Callable[[Prober, FakeGuestAgent, list[DomainEvent]],
                                       Awaitable[None]]) -> None:
    async def main() -> None:
        events: list[DomainEvent] = []
        ga = FakeGuestAgent()
        prober = Prober(ga, SystemClock(), events.append, tmp_path)  # type: ignore[arg-type]
        try:
            await body(prober, ga, events)
        finally:
            await prober.close()

    asyncio.run(main())


def kinds(events: list[DomainEvent], uuid: str) -> list[str]:
    return [e.kind for e in events if e.uuid == uuid]


def test_http_failure_and_recovery_are_reported_once_each(tmp_path: Path) -> None:
    async def body(prober: Prober, ga: FakeGuestAgent, events: list[DomainEvent]) -> None:
        app = App()
        url = await app.start()
        probe = {"kind": "http", "target": url, "interval_s": 0.1, "timeout_s": 0.1,
                 "failure_threshold": 3, "success_threshold": 2}
        prober.set_document(parse_document({"instances": [entry(U1, "vm1", [probe])]}))
        prober.reconcile(running(U1))
        await until(lambda: len(app.hits) >= 3)
        assert events == []  # healthy: nothing to say
        app.status = "503 Service Unavailable"
        await until(lambda: "app_failed" in kinds(events, U1))
        failed = events[0]
        assert (failed.name, failed.probe, failed.detail, failed.count) == (
            "vm1", f"http {url}", "HTTP 503", 3)
        seen = len(app.hits)
        await until(lambda: len(app.hits) >= seen + 3)
        assert kinds(events, U1) == ["app_failed"]  # state changes only
        app.status = "200 OK"
        await until(lambda: "app_recovered" in kinds(events, U1))
        assert kinds(events, U1) == ["app_failed", "app_recovered"]
        assert events[1].count == 2 and events[1].detail == ""
        assert prober.health() == {"watched": 1, "app_failed": [], "guest_unresponsive": []}
        app.stop()

    run(tmp_path, body)


def test_a_hung_probe_delays_no_other_and_a_stop_ends_probing(tmp_path: Path) -> None:
    async def body(prober: Prober, ga: FakeGuestAgent, events: list[DomainEvent]) -> None:
        slow, fast = App(), App()
        slow.hang = True
        slow_url, fast_url = await slow.start(), await fast.start()
        prober.set_document(parse_document({"instances": [
            entry(U1, "vm1", [{"kind": "http", "target": slow_url, "interval_s": 1,
                               "timeout_s": 0.9, "failure_threshold": 2}]),
            entry(U2, "vm2", [{"kind": "http", "target": fast_url, "interval_s": 0.1,
                               "timeout_s": 0.1}])]}))
        prober.reconcile(running(U1, U2))
        t0 = time.monotonic()
        await until(lambda: "app_failed" in kinds(events, U1), timeout=4)
        hung_for = time.monotonic() - t0
        fast_hits = [t for t in fast.hits if t >= t0]
        gaps = [b - a for a, b in itertools.pairwise(fast_hits)]
        assert len(fast_hits) >= 0.7 * hung_for / 0.1, (len(fast_hits), hung_for)
        assert max(gaps) < 0.5, gaps  # never waited for the hung application
        assert events[0].detail == "no answer within 0.9 s"
        prober.domain_event(DomainEvent(U2, "vm2", "stopped", "destroyed", True, 0.0))
        await asyncio.sleep(0.15)
        stopped_at = len(fast.hits)
        await asyncio.sleep(0.4)
        assert len(fast.hits) == stopped_at
        slow.stop()
        fast.stop()

    run(tmp_path, body)


def test_initial_delay_and_reboot_hold_failures_back(tmp_path: Path) -> None:
    async def body(prober: Prober, ga: FakeGuestAgent, events: list[DomainEvent]) -> None:
        app = App()
        app.status = "500 Internal Server Error"
        url = await app.start()
        probe = {"kind": "http", "target": url, "interval_s": 0.1, "timeout_s": 0.1,
                 "failure_threshold": 1, "initial_delay_s": 0.8}
        prober.set_document(parse_document({"instances": [entry(U1, "vm1", [probe])]}))
        prober.reconcile(running(U1))
        t0 = time.monotonic()
        await until(lambda: "app_failed" in kinds(events, U1))
        assert time.monotonic() - t0 >= 0.75  # the guest was booting before that
        app.status = "200 OK"
        await until(lambda: "app_recovered" in kinds(events, U1))
        app.status = "500 Internal Server Error"
        prober.domain_event(DomainEvent(U1, "vm1", "rebooted", "", True, 0.0))
        t1 = time.monotonic()
        await until(lambda: kinds(events, U1).count("app_failed") == 2)
        assert time.monotonic() - t1 >= 0.75
        app.stop()

    run(tmp_path, body)


def test_exec_probes_and_pings_through_the_guest_agent(tmp_path: Path) -> None:
    async def body(prober: Prober, ga: FakeGuestAgent, events: list[DomainEvent]) -> None:
        exec_probe = {"kind": "exec", "target": "/etc/init.d/app status", "interval_s": 0.1,
                      "timeout_s": 0.1, "failure_threshold": 2}
        ping = {"interval_s": 1, "failures": 2}
        prober.set_document(parse_document({"instances": [
            entry(U1, "vm1", [exec_probe], ping), entry(U2, "vm2", [exec_probe], ping)]}))
        ga.channels[U2] = None  # vm2 has no guest agent channel: no exec probe, no ping
        prober.reconcile(running(U1, U2))
        await until(lambda: (U1, "exec") in ga.calls and (U1, "ping") in ga.calls)
        ga.exit_codes[U1] = 3
        await until(lambda: "app_failed" in kinds(events, U1))
        assert events[-1].detail == "exit code 3: app down"
        ga.exit_codes[U1] = 0
        await until(lambda: "app_recovered" in kinds(events, U1))
        ga.hung.add(U1)  # the guest hangs: qemu-ga answers nothing any more
        await until(lambda: "guest_unresponsive" in kinds(events, U1), timeout=6)
        unresponsive = next(e for e in events if e.kind == "guest_unresponsive")
        assert unresponsive.probe == "guest-ping" and unresponsive.count == 2
        assert "app_failed" in kinds(events, U1)  # the exec probe timed out too
        assert not any(u == U2 for u, _ in ga.calls)
        assert kinds(events, U2) == []

    run(tmp_path, body)


def test_a_restarted_agent_reports_the_recovery_it_owes(tmp_path: Path) -> None:
    app = App()
    probe: dict[str, Any] = {"kind": "http", "interval_s": 0.1, "timeout_s": 0.1,
                             "failure_threshold": 2}

    async def first(prober: Prober, ga: FakeGuestAgent, events: list[DomainEvent]) -> None:
        app.status = "503 Service Unavailable"
        probe["target"] = await app.start()
        prober.set_document(parse_document({"instances": [entry(U1, "vm1", [probe])]}))
        prober.reconcile(running(U1))
        await until(lambda: "app_failed" in kinds(events, U1))
        app.stop()
        app.status = "200 OK"

    async def second(prober: Prober, ga: FakeGuestAgent, events: list[DomainEvent]) -> None:
        probe["target"] = await app.start()  # the application answers again
        prober.set_document(parse_document({"instances": [entry(U1, "vm1", [probe])]}))
        prober.reconcile(running(U1))
        await until(lambda: "app_recovered" in kinds(events, U1))
        assert kinds(events, U1) == ["app_recovered"]
        app.stop()

    run(tmp_path, first)
    assert "app_failed" in (tmp_path / "probe-state.json").read_text()
    run(tmp_path, second)
    assert U1 not in (tmp_path / "probe-state.json").read_text()


def test_a_policy_change_restarts_only_changed_probes(tmp_path: Path) -> None:
    async def body(prober: Prober, ga: FakeGuestAgent, events: list[DomainEvent]) -> None:
        a, b = App(), App()
        url_a, url_b = await a.start(), await b.start()
        pa = {"kind": "http", "target": url_a, "interval_s": 0.1, "timeout_s": 0.1}
        pb = {"kind": "http", "target": url_b, "interval_s": 0.1, "timeout_s": 0.1}
        prober.set_document(parse_document({"instances": [entry(U1, "vm1", [pa, pb])]}))
        prober.reconcile(running(U1))
        await until(lambda: len(a.hits) >= 2 and len(b.hits) >= 2)
        prober.set_document(parse_document({"instances": [entry(U1, "vm1", [pa])]}))
        await asyncio.sleep(0.15)
        b_then = len(b.hits)
        await asyncio.sleep(0.4)
        assert len(b.hits) == b_then and len(a.hits) >= 6
        prober.set_document(parse_document({"instances": []}))  # not on this host any more
        await asyncio.sleep(0.15)
        a_then = len(a.hits)
        await asyncio.sleep(0.3)
        assert len(a.hits) == a_then and prober.health()["watched"] == 0
        a.stop()
        b.stop()

    run(tmp_path, body)
