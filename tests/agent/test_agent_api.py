"""Real agents on 127.0.0.1: heartbeats and acks, peer probes, the HTTP API."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentkit import TOKEN, FakeWatchdog, config, free_port
from test_prober import U1, App, FakeGuestAgent, entry, running, until

from tiers import promtool
from vmha.adapters.heartbeat import start_receiver
from vmha.adapters.system import SystemClock
from vmha.agent.domains import DomainEvent
from vmha.agent.http import AgentApi
from vmha.agent.prober import Prober
from vmha.agent.probes import parse_document
from vmha.agent.runtime import Agent, Identity
from vmha.domain.probes import ProbeKind

SEG = b"g" * 32
UUID = "6f1c9e4e-7c1a-4d2e-9a51-0c7f00000001"


async def http(port: int, method: str, path: str, body: Any = None, token: str | None = TOKEN
               ) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode() if body is not None else b""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def make_agent(tmp_path: Path, name: str, port: int, peers: dict[str, int],
                     hb_port: int, seg: bytes | None = SEG) -> tuple[Agent, AgentApi]:
    cfg = config(tmp_path / name, host=name, api={"listen": f"127.0.0.1:{port}", "token": TOKEN},
                 peers={p: f"127.0.0.1:{pp}" for p, pp in peers.items()},
                 controller={"heartbeat": [f"127.0.0.1:{hb_port}"]})
    ident = Identity(name, "lab", name.encode().ljust(8, b"_")[:8], name.encode() * 8, seg)
    agent = Agent(cfg, ident, SystemClock(), FakeWatchdog())
    await agent.open()
    api = AgentApi(agent, TOKEN)
    await api.start("127.0.0.1", port)
    return agent, api


def run(tmp_path: Path, body: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        pa, pb, hb = free_port(), free_port(), free_port()
        a, api_a = await make_agent(tmp_path, "a", pa, {"b": pb, "c": free_port()}, hb)
        b, api_b = await make_agent(tmp_path, "b", pb, {"a": pa}, hb)
        try:
            await body(a, b, pa, pb, hb)
        finally:
            for agent, api in ((a, api_a), (b, api_b)):
                await api.stop()
                agent.close()

    asyncio.run(main())


def test_probe_reports_which_peers_answer(tmp_path: Path) -> None:
    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        status, got = await http(pa, "POST", "/v1/probe",
                                 {"targets": ["b", "c"], "timeout_s": 0.3})
        assert (status, got) == (200, {"b": True, "c": False})
        assert b.metrics["probes_answered"] >= 1

    run(tmp_path, body)


def test_api_refuses_bad_tokens_and_bad_input(tmp_path: Path) -> None:
    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        assert (await http(pa, "GET", "/v1/health", token=None))[0] == 401
        assert (await http(pa, "GET", "/v1/health", token="wrong"))[0] == 401
        status, err = await http(pa, "POST", "/v1/probe", {"targets": ["zz"]})
        assert status == 422 and "zz" in err["detail"]
        status, err = await http(pa, "POST", "/v1/probe", {"targets": ["b"], "timeout_s": 99})
        assert status == 422 and "timeout_s" in err["detail"]
        assert (await http(pa, "GET", "/v1/probe"))[0] == 405
        assert (await http(pa, "GET", "/v1/nothing"))[0] == 404
        status, health = await http(pa, "GET", "/v1/health")
        assert status == 200 and health["host"] == "a" and health["segment"] == "lab"

    run(tmp_path, body)


def test_malformed_requests_get_400_and_say_what_is_wrong(tmp_path: Path) -> None:
    async def send(port: int, raw: bytes) -> tuple[int, dict[str, Any]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        answer = await reader.read()
        writer.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(payload)

    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
        status, err = await send(pa, b"GET /v1/health HTTP/1.1\r\n" + auth
                                 + b"no colon in this header\r\n\r\n")
        assert status == 400 and "bad header line" in err["detail"]
        status, err = await send(pa, b"POST /v1/probe HTTP/1.1\r\n" + auth
                                 + b"Content-Length: ten\r\n\r\n")
        assert status == 400 and "Content-Length" in err["detail"]
        status, err = await send(pa, b"GET /v1/health\r\n" + auth + b"\r\n")
        assert status == 400 and "request line" in err["detail"]

    run(tmp_path, body)


def test_probes_signed_with_another_segment_secret_get_no_answer(tmp_path: Path) -> None:
    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        b.ident = Identity("b", "lab", b"b" * 8, b"x" * 32, b"other segment secret")
        assert await a.probe("b", 0.3) is False
        assert b.metrics["rejected"] >= 1 and b.metrics["probes_answered"] == 0

    run(tmp_path, body)


def test_heartbeats_are_acked_and_count_as_contact(tmp_path: Path) -> None:
    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        got: list[tuple[str, int, float]] = []
        secrets = {"a": a.ident.secret, "b": b.ident.secret}
        transport, receiver = await start_receiver(
            secrets.get, lambda h, s, t: got.append((h, s, t)), "127.0.0.1", hb)
        try:
            for _ in range(3):
                await a.tick()
                await asyncio.sleep(0.05)
        finally:
            transport.close()
        assert [(h, s) for h, s, _ in got] == [("a", 1), ("a", 2), ("a", 3)]
        assert a.metrics["acks"] == 3 and receiver.metrics["accepted"] == 3
        assert a.monitor.controller_silent_for(SystemClock().now()) < 0.2

    run(tmp_path, body)


def test_without_a_hypervisor_the_domain_api_says_so(tmp_path: Path) -> None:
    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        for method, path in (("GET", "/v1/domains"), ("GET", f"/v1/domains/{UUID}"),
                             ("POST", f"/v1/domains/{UUID}/actions")):
            status, err = await http(pa, method, path, {"action": "start"})
            assert status == 404
            assert err["detail"].startswith("no hypervisor configured on a: set [hypervisor]")
        status, health = await http(pa, "GET", "/v1/health")
        assert status == 200 and health["hypervisor"] is None

    run(tmp_path, body)


def test_domain_bodies_up_to_256_kib_are_read_and_larger_ones_refused(tmp_path: Path) -> None:
    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        status, err = await http(pa, "PUT", f"/v1/domains/{UUID}", {"xml": "x" * 200_000})
        assert status == 404 and "no hypervisor" in err["detail"]  # read, then routed
        reader, writer = await asyncio.open_connection("127.0.0.1", pa)
        writer.write(f"PUT /v1/domains/{UUID} HTTP/1.1\r\nContent-Length: 300000\r\n\r\n"
                     .encode())  # refused on the declared length, before any body
        raw = await reader.read()
        writer.close()
        assert raw.split()[1] == b"413" and b"262144" in raw

    run(tmp_path, body)


async def raw_get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    ctype = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-type:")), "")
    return int(head.split()[1]), ctype, payload.decode()


def test_agent_metrics_in_the_prometheus_text_format(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async def body(a: Agent, b: Agent, pa: int, pb: int, hb: int) -> None:
        await a.probe("b", 0.5)
        await a.tick()
        assert (await raw_get(pb, "/v1/metrics", token=None))[0] == 401
        status, ctype, text = await raw_get(pb, "/v1/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        got = {s.name: (s.labels, s.value) for f in text_string_to_metric_families(text)
               for s in f.samples}
        assert got["vmha_agent_probes_answered_total"] == ({"host": "b"}, 1.0)
        assert got["vmha_agent_watchdog_armed"][1] == 0.0  # backend none in these tests
        a_text = (await raw_get(pa, "/v1/metrics"))[2]
        a_got = {s.name: s.value for f in text_string_to_metric_families(a_text)
                 for s in f.samples}
        assert a_got["vmha_agent_heartbeats_sent_total"] == 1.0
        assert a_got["vmha_agent_probe_replies_total"] == 1.0
        assert "vmha_agent_send_errors_total" in a_got

    run(tmp_path, body)


def test_application_probe_results_in_the_agents_metrics(tmp_path: Path) -> None:
    """A real agent API with a prober: an http probe against a local app and
    guest-agent pings; the app fails, then the guest agent stops answering."""
    from prometheus_client.parser import text_string_to_metric_families

    async def scrape(port: int) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        text = (await raw_get(port, "/v1/metrics"))[2]
        return text, {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "host"))):
                      s.value for f in text_string_to_metric_families(text) for s in f.samples}

    async def main() -> None:
        port = free_port()
        cfg = config(tmp_path / "a", host="a", api={"listen": f"127.0.0.1:{port}", "token": TOKEN})
        agent = Agent(cfg, Identity("a", "lab", b"a_______", b"a" * 8, SEG), SystemClock(),
                      FakeWatchdog())
        await agent.open()
        events: list[DomainEvent] = []
        ga = FakeGuestAgent()
        prober = Prober(ga, SystemClock(), events.append, tmp_path)  # type: ignore[arg-type]
        api = AgentApi(agent, TOKEN, prober=prober)
        await api.start("127.0.0.1", port)
        app = App()
        try:
            url = await app.start()
            probe = {"kind": "http", "target": url, "interval_s": 0.5, "timeout_s": 0.5,
                     "failure_threshold": 2}
            prober.set_document(parse_document({"instances": [
                entry(U1, "vm1", [probe], {"interval_s": 1, "failures": 2})]}))
            prober.reconcile(running(U1))
            await until(lambda: prober.counts.checks[ProbeKind.HTTP][1] >= 1
                        and prober.counts.pings[1] >= 1, timeout=30)
            app.status = "503 Service Unavailable"
            ga.ping_ok[U1] = False
            kinds = lambda: {e.kind for e in events}  # noqa: E731
            await until(lambda: {"app_failed", "guest_unresponsive"} <= kinds(), timeout=30)
            text, got = await scrape(port)
        finally:
            app.stop()
            await api.stop()
            await prober.close()
            agent.close()
        checks = "vmha_agent_app_probe_checks_total"
        assert got[(checks, (("kind", "http"), ("result", "ok")))] >= 1
        assert got[(checks, (("kind", "http"), ("result", "failed")))] >= 2
        assert got[(checks, (("kind", "exec"), ("result", "failed")))] == 0  # every kind listed
        assert got[("vmha_agent_guest_pings_total", (("result", "ok"),))] >= 1
        assert got[("vmha_agent_guest_pings_total", (("result", "failed"),))] >= 2
        reports = "vmha_agent_probe_reports_total"
        assert got[(reports, (("kind", "app_failed"),))] == 1
        assert got[(reports, (("kind", "guest_unresponsive"),))] == 1
        assert got[(reports, (("kind", "app_recovered"),))] == 0
        assert got[("vmha_agent_instances_watched", ())] == 1
        assert got[("vmha_agent_instances_app_failed", ())] == 1
        assert got[("vmha_agent_instances_guest_unresponsive", ())] == 1
        lint = subprocess.run([promtool(), "check", "metrics"], input=text,
                              capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

    asyncio.run(main())
