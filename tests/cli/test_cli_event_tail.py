"""`vmha event tail` on the SSE stream of a real `vmha serve` process:
events appear as they commit (latency measured), the controller is
SIGKILLed and restarted on the same store, then stopped cleanly and
restarted, and the tail resumes with Last-Event-ID: every event printed
once, in order, with a notice on stderr for each reconnect."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from live_server import ADMIN, LiveServer, until
from typer.testing import Result

from vmha.adapters.store import open_store
from vmha.adapters.store.sql import SqlStore
from vmha.domain.model import Event, Severity, SubjectKind
from vmha.ports import EventQuery

Vmha = Callable[..., Result]


class Tail:
    """`vmha event tail ARGS` as a child process; lines timestamped on arrival."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "VMHA_URL": url, "VMHA_TOKEN": ADMIN, "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from vmha.cli.main import main; main()",
             "event", "tail", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        self.out: list[tuple[float, str]] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: object, is_out: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            if is_out:
                self.out.append((time.monotonic(), line.rstrip("\n")))
            else:
                self.err.append(line.rstrip("\n"))

    def lines(self) -> list[str]:
        return [line for _, line in list(self.out)]

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            status = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(5)
        for thread in self._threads:
            thread.join(5)
        return status


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _human_id(line: str) -> int:
    return int(line.split()[0].lstrip("#"))


def _append(store: SqlStore, *events: Event) -> tuple[float, list[int]]:
    stored = store.append_events(list(events))
    return time.monotonic(), [e.id for e in stored]


def _warm_up(store: SqlStore, tail: Tail, *others: Tail) -> int:
    """Commit host.up events until every tail printed one (each starts at
    the newest event when it connects, so the ones before are not shown)."""
    deadline = time.monotonic() + 30
    while not all(t.out for t in (tail, *others)):
        assert time.monotonic() < deadline, f"a tail printed nothing: {tail.err}"
        _append(store, Event("host.up", "warm", time.time()))
        time.sleep(0.3)
    return _human_id(tail.out[0][1])


def _crash(i: int) -> Event:
    return Event("instance.crashed", f"vm-{i}", time.time(), SubjectKind.INSTANCE, "p1",
                 Severity.ERROR, {"reason": "panicked", "host": "cn1"})


def test_tail_follows_the_stream_across_kill_and_restart(live: LiveServer) -> None:
    store = open_store(f"sqlite:///{live.db}")
    hosts = Tail(live.url, "--type", "host.*")
    raw = Tail(live.url, "--json")
    try:
        first = _warm_up(store, hosts, raw)
        latencies = []
        for i in range(20):  # one at a time: commit -> printed line
            seen = len(hosts.out)
            done, _ = _append(store, Event("host.up", f"cn{i}", time.time(),
                                           payload={"reason": f"r{i}"}), _crash(i))
            until(lambda seen=seen: len(hosts.out) > seen, 10, "event not printed")  # type: ignore[misc]
            latencies.append(hosts.out[seen][0] - done)

        live.kill()  # SIGKILL: the stream breaks mid-connection
        _append(store, *[Event("host.failed", f"down{i}", time.time()) for i in range(5)],
                _crash(99))
        live.start()
        _append(store, Event("host.fenced", "down0", time.time(), payload={"by": "ipmi"}))
        until(lambda: _reconnects(hosts) == 1, 20, f"no reconnect: {hosts.err}")
        live.stop()  # a clean stop ends the stream; a new controller comes back
        _append(store, Event("host.recovered", "down0", time.time()))
        live.start()
        _append(store, Event("host.up", "last", time.time()))

        expected = _stored_after(store, first - 1)
        want_hosts = [e.id for e in expected if e.type.startswith("host.")]
        until(lambda: [_human_id(x) for x in hosts.lines()][-1:] == want_hosts[-1:], 30,
              f"tail did not catch up: {hosts.lines()[-3:]} {hosts.err}")
        until(lambda: json.loads(raw.lines()[-1])["id"] == expected[-1].id, 10,
              f"--json tail did not catch up: {raw.err}")
    finally:
        assert hosts.interrupt() == 0
        assert raw.interrupt() == 0
        store.close()

    # Nothing lost, nothing twice, in order; only host.* in the filtered tail.
    assert [_human_id(line) for line in hosts.lines()] == want_hosts
    sample = next(line for line in hosts.lines() if " host/cn3 " in line)
    assert sample.split()[2:5] == ["host.up", "host/cn3", "[info]"] and sample.endswith("reason=r3")
    printed = [json.loads(line) for line in raw.lines()]
    raw_ids = [e["id"] for e in printed]
    assert raw_ids == sorted(set(raw_ids))  # in order, once each
    assert raw_ids[-len(expected):] == [e.id for e in expected][-len(raw_ids):]
    crash = next(e for e in printed if e["subject"] == "vm-99")
    assert set(crash) == {"id", "type", "subject", "subject_kind", "project", "severity",
                          "time", "payload"}
    assert (crash["type"], crash["subject_kind"], crash["project"], crash["severity"]) == (
        "instance.crashed", "instance", "p1", "error")
    assert crash["payload"] == {"reason": "panicked", "host": "cn1"}

    # One notice per reconnect on stderr, none on stdout.
    lost = [line for line in hosts.err if line.startswith("lost the event stream")]
    back = [line for line in hosts.err if line.startswith("reconnected to")]
    assert len(back) == 2, hosts.err
    assert all(line.startswith("cannot reconnect to ") for line in hosts.err
               if not line.startswith(("lost ", "reconnected "))), hosts.err
    assert len(lost) == 2 and "reconnecting in" in lost[0] and "resuming after event #" in lost[0]

    print(f"\nSSE tail latency commit -> printed line over {len(latencies)} events: "
          f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert statistics.median(latencies) < 1.0


def _reconnects(tail: Tail) -> int:
    return sum(line.startswith("reconnected to") for line in tail.err)


def _stored_after(store: SqlStore, since: int) -> list[Event]:
    out: list[Event] = []
    while batch := store.list_events(EventQuery(since=since, limit=500)):
        out += batch
        since = batch[-1].id
    return out


def test_tail_refusals_end_the_command(live: LiveServer, vmha_offline: Vmha) -> None:
    env = {"VMHA_URL": live.url, "VMHA_TOKEN": "not-a-token"}
    denied = vmha_offline("event", "tail", env=env)
    assert denied.exit_code == 1
    assert denied.stderr.startswith("error: 401 ")

    env["VMHA_TOKEN"] = ADMIN
    bad = vmha_offline("event", "tail", "--since", "-1", env=env)
    assert bad.exit_code == 2 and "--since" in bad.output  # refused before any request
    bad = vmha_offline("event", "tail", "--type", "NOT A TYPE", env=env)
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: 422 Invalid input: query.type[0]: ")
    live.stop()
    down = vmha_offline("event", "tail", env=env)
    assert down.exit_code == 1
    assert down.stderr == (
        f"error: cannot reach the vmha API at {live.url} (connection refused); start it "
        "with 'vmha serve' or point --url / VMHA_URL at a running controller\n")
