"""`vmha segment resume` against a real `vmha serve` whose mass-failure
guard really paused a segment (issue 11 item 13a).

Three agents are registered through the API and heartbeat over UDP (signed,
every 0.1 s, the controller set to that interval); two of them stop: two of
three hosts turning suspect at once is more than the 50 % threshold, so the
segment is paused. No peer or BMC can vouch for the silent hosts, so they
stay suspect: only an operator can resume the segment."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from live_server import ADMIN, AGENT, VIEWER, LiveServer, until
from typer.testing import CliRunner

from vmha.adapters.heartbeat.wire import Datagram, Kind, encode
from vmha.cli.main import app

HOSTS = ("h1", "h2", "h3")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Agents:
    """Signed heartbeats of the registered hosts, every 0.1 s, until silenced."""

    def __init__(self, port: int, secrets: dict[str, bytes]) -> None:
        self.port, self.secrets = port, secrets
        self.silent: set[str] = set()
        self.stop = threading.Event()
        self.boot = os.urandom(8)

    def run(self) -> None:
        seq = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not self.stop.wait(0.1):
                seq += 1
                for host, key in self.secrets.items():
                    if host not in self.silent:
                        beat = Datagram(Kind.HEARTBEAT, host, self.boot, seq, time.time())
                        sock.sendto(encode(beat, key), ("127.0.0.1", self.port))


@pytest.fixture
def paused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    port = free_udp_port()
    server = LiveServer(tmp_path_factory.mktemp("resume"),
                        "[controller]\nheartbeat_interval_s = 0.1\nstore_refresh_s = 0.2\n",
                        heartbeat_listen=f"127.0.0.1:{port}")
    server.start()
    agents = None
    try:
        assert server.api("POST", "/v1/segments", json={"name": "s1"}).status_code == 201
        secrets = {}
        for host in HOSTS:
            got = server.api("POST", "/v1/agents/register", token=AGENT,
                             json={"host": host, "segment": "s1"})
            assert got.status_code == 201, got.text
            secrets[host] = got.json()["secret"].encode()
        agents = Agents(port, secrets)
        threading.Thread(target=agents.run, daemon=True).start()
        until(lambda: all(h["heartbeat_age_s"] is not None for h in
                          server.api("GET", "/v1/hosts").json()["items"]), 15, "heartbeats")
        time.sleep(3)  # the detectors learn the 0.1 s rhythm
        agents.silent |= {"h1", "h2"}
        until(lambda: _events(server, "segment.recovery_paused"), 15, "segment paused")
        yield server
    finally:
        if agents is not None:
            agents.stop.set()
        server.stop()


def _events(server: LiveServer, etype: str) -> list[dict[str, object]]:
    got = server.api("GET", "/v1/events", params={"type": etype, "subject": "s1"})
    return list(got.json()["items"])


def _vmha(server: LiveServer, token: str, *args: str) -> tuple[int, str, str]:
    env = {"VMHA_URL": server.url, "VMHA_TOKEN": token, "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["segment", "resume", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_an_operator_resumes_a_paused_segment(paused: LiveServer) -> None:
    code, _, err = _vmha(paused, VIEWER, "s1")
    assert code == 1 and err.startswith("error: 403 Forbidden: role 'viewer' may not"), err
    code, _, err = _vmha(paused, ADMIN, "nope")
    assert code == 1 and err.startswith("error: 404 "), err

    code, out, err = _vmha(paused, ADMIN, "s1")
    assert (code, out) == (0, "segment s1: automatic recovery resumed by ops\n"), err
    (resumed,) = _events(paused, "segment.recovery_resumed")
    assert resumed["payload"]["operator"] == "ops"
    assert resumed["payload"]["reason"] == "resumed by operator ops"

    code, _, err = _vmha(paused, ADMIN, "s1", "--json")
    assert code == 1 and err.startswith("error: 409 "), err
    assert "automatic recovery of segment s1 is not paused: nothing to resume" in err
    hosts = {h["name"]: h["state"] for h in paused.api("GET", "/v1/hosts").json()["items"]}
    assert hosts == {"h1": "suspect", "h2": "suspect", "h3": "up"}
