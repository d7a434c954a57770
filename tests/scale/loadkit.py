"""Heartbeat load for the scale benchmark and test: a controller, agents,
sender processes, a listing client and samplers.

Used by `bench/controller_scale.py` and `tests/scale/test_scale.py` (and
meant for the controller-HA benchmark, which points the same senders at
several controllers). `Serve` runs a real `vmha serve` (SQLite, heartbeats
on 127.0.0.1); `register` registers N agents through the API (the bulk
call when the controller has it). A sender process owns one UDP socket
bound to its own 127.0.0.0/8 address and sends real signed heartbeats
(`vmha.adapters.heartbeat.wire`) for its share of the hosts on a fixed
1 s grid, the hosts' phases spread evenly over the interval; it reads the
controller's acks between sends. Hosts named in `silenced` stop at
`silence_at` (their last send time is kept). `Lister` walks
`GET /v1/hosts` pages in a thread. The samplers read /proc: a process's
CPU time and resident memory, a UDP socket's kernel drop counter, and the
kernel's UDP totals.

Test and benchmark code: nothing here is imported by the product.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from vmha.adapters.heartbeat.wire import Datagram, Kind, encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from live_server import free_low_port, until

ADMIN, AGENT = "scale-admin-token-1", "scale-agent-token-1"
SEGMENT = "scale"
BATCH = 1000  # agents per bulk registration request

ACK_KIND = int(Kind.ACK)
SEND_BUFFER = 4 * 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class SenderSpec:
    """One sender process: its hosts (name, secret, phase within the interval)."""

    index: int
    address: str  # 127.x.y.z to send from
    port: int  # its UDP port (acks come back here); below 32768
    target: tuple[str, int]  # the controller's heartbeat address
    hosts: tuple[tuple[str, bytes, float], ...]
    start_at: float  # epoch seconds of round 0
    stop_at: float
    window: tuple[float, float]  # sends and acks counted inside it
    interval_s: float = 1.0
    silence_at: float = float("inf")
    silenced: frozenset[str] = field(default_factory=frozenset)
    # Several controllers: every heartbeat also goes to `more_targets`
    # (agents sending to all), or, with `route` (host -> index into
    # (target, *more_targets)), to that one only (agents sending to their owner).
    more_targets: tuple[tuple[str, int], ...] = ()
    route: Mapping[str, int] | None = None
    # a multiprocessing Array with a flag per target of (target, *more_targets):
    # a target whose flag is set gets nothing (a controller made deaf)
    muted: Any = None


@dataclass
class _Tally:
    sent: int = 0
    sent_in_window: int = 0
    acks_in_window: int = 0
    acks: int = 0
    send_errors: int = 0
    max_lag_s: float = 0.0
    last_sent: dict[str, float] = field(default_factory=dict)


def split_hosts(hosts: Sequence[tuple[str, bytes]], senders: int,
                interval_s: float) -> list[tuple[tuple[str, bytes, float], ...]]:
    """Host g gets phase g/N of the interval and goes to sender g mod K."""
    n = len(hosts)
    shares: list[list[tuple[str, bytes, float]]] = [[] for _ in range(senders)]
    for g, (name, secret) in enumerate(hosts):
        shares[g % senders].append((name, secret, interval_s * g / n))
    return [tuple(share) for share in shares]


def _open(spec: SenderSpec) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SEND_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.bind((spec.address, spec.port))
    sock.setblocking(False)
    return sock


def _read_acks(sock: socket.socket, spec: SenderSpec, tally: _Tally) -> None:
    now = time.time()
    inside = spec.window[0] <= now < spec.window[1]
    while True:
        try:
            data = sock.recv(512)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # e.g. ICMP port unreachable reported on the socket
        if len(data) > 3 and data[3] == ACK_KIND:
            tally.acks += 1
            tally.acks_in_window += inside


def _send_one(sock: socket.socket, spec: SenderSpec, host: tuple[str, bytes, float],
              boot: bytes, seq: int, due: float, tally: _Tally) -> None:
    name, secret, _ = host
    now = time.time()
    tally.max_lag_s = max(tally.max_lag_s, now - due)
    data = encode(Datagram(Kind.HEARTBEAT, name, boot, seq, now), secret)
    targets = (spec.target, *spec.more_targets)
    if spec.route is not None:
        targets = (targets[spec.route[name]],)
    elif spec.muted is not None:
        targets = tuple(t for i, t in enumerate(targets) if not spec.muted[i])
    failed = 0
    for target in targets:
        try:
            sock.sendto(data, target)
        except OSError:  # e.g. an earlier datagram's port unreachable: the next goes on
            failed += 1
    tally.send_errors += failed
    if failed == len(targets):
        return
    tally.sent += 1
    tally.sent_in_window += spec.window[0] <= due < spec.window[1]
    if name in spec.silenced:
        tally.last_sent[name] = now


def run_sender(spec: SenderSpec, out: Connection) -> None:
    """Send until `stop_at`, then report a dict on `out`."""
    tally = _Tally()
    sock = _open(spec)
    boot = os.urandom(8)
    seqs = [0] * len(spec.hosts)
    start_cpu = time.process_time()
    i = rnd = 0
    while spec.hosts:
        host = spec.hosts[i]
        due = spec.start_at + rnd * spec.interval_s + host[2]
        if due >= spec.stop_at:
            break
        ahead = due - time.time()
        if ahead > 0:
            _read_acks(sock, spec, tally)
            time.sleep(min(ahead, 0.005))
            continue
        if not (host[0] in spec.silenced and due >= spec.silence_at):
            seqs[i] += 1
            _send_one(sock, spec, host, boot, seqs[i], due, tally)
        i += 1
        if i == len(spec.hosts):
            i, rnd = 0, rnd + 1
    time.sleep(0.5)
    _read_acks(sock, spec, tally)
    sock.close()
    out.send({"index": spec.index, "address": spec.address, "sent": tally.sent,
              "sent_in_window": tally.sent_in_window, "acks": tally.acks,
              "acks_in_window": tally.acks_in_window, "send_errors": tally.send_errors,
              "max_lag_s": round(tally.max_lag_s, 3), "last_sent": tally.last_sent,
              "cpu_s": round(time.process_time() - start_cpu, 2)})
    out.close()


# -- samplers ------------------------------------------------------------------


def family(pid: int) -> list[int]:
    """`pid` and its children (the controller and its heartbeat worker)."""
    out = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (all their
    threads), in seconds."""
    total = 0.0
    for member in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def udp_socket_drops(address: str, port: int) -> int | None:
    """The kernel's drop counter of the UDP socket bound to address:port
    (/proc/net/udp, last column), or None when there is none."""
    local = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1] == local:
            return int(cols[-1])
    return None


def udp_totals() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp `Udp:` lines)."""
    rows = [line.split()[1:] for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")]
    return dict(zip(rows[0], (int(v) for v in rows[1]), strict=True))


class ProcessSampler:
    """CPU (% of one core per `every_s`) and RSS of `pid` and its children,
    in a thread."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float, float]] = []  # (time, cpu %, rss MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            last_t, last_cpu = time.time(), cpu_seconds(self.pid)
            while not self._stop.wait(self.every_s):
                now, cpu = time.time(), cpu_seconds(self.pid)
                pct = 100.0 * max(0.0, cpu - last_cpu) / max(now - last_t, 1e-6)
                self.samples.append((now, pct, rss_mib(self.pid)))
                last_t, last_cpu = now, cpu

    def between(self, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {"cpu_mean_pct": None, "cpu_max_pct": None, "rss_max_mib": None}
        cpu = [s[1] for s in inside]
        return {"cpu_mean_pct": round(sum(cpu) / len(cpu), 1),
                "cpu_max_pct": round(max(cpu), 1),
                "rss_max_mib": round(max(s[2] for s in inside), 1)}


# -- the controller -----------------------------------------------------------


class Serve:
    """`vmha serve` on SQLite with heartbeats on 127.0.0.1:<udp port>;
    `source`: another vmha's `src` to run (e.g. an older commit, to measure
    what changed), else the installed one."""

    def __init__(self, directory: Path, extra: str = "", source: Path | None = None) -> None:
        self.source = source
        self.port, self.hb_port = free_low_port(), free_udp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db, self.log = directory / "vmha.db", directory / "serve.log"
        self.config = directory / "vmha.toml"
        self.config.write_text(
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[[api.tokens]]\ntoken = "{ADMIN}"\nrole = "admin"\nname = "bench"\n'
            f'[[api.tokens]]\ntoken = "{AGENT}"\nrole = "agent"\n'
            f'[store]\nurl = "sqlite:///{self.db}"\n'
            f'[heartbeat]\nlisten = "127.0.0.1:{self.hb_port}"\n' + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from vmha.cli.main import main; main()",
                 "serve", "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                env=env)
        until(self._ready, 60, f"vmha serve not ready: {self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        return False

    def stop(self, patience_s: float = 60.0) -> float | None:
        """SIGTERM; seconds until it exited (None: killed after `patience_s`)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(patience_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None
        return round(time.monotonic() - start, 2)

    def client(self, token: str = ADMIN, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout,
                            headers={"Authorization": f"Bearer {token}"})


def free_udp_port(address: str = "127.0.0.1") -> int:
    """A UDP port free on `address`, below the ephemeral range (32768),
    tried from a random place (two runs at once do not race for one)."""
    ports = list(range(21000, 32000, 7))
    start = random.randrange(len(ports))
    for port in ports[start:] + ports[:start]:
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET,
                                                         socket.SOCK_DGRAM) as sock:
            sock.bind((address, port))
            return port
    raise RuntimeError(f"no free UDP port on {address} in 21000-32000")


# -- registration -----------------------------------------------------------------


def _agent(name: str) -> dict[str, Any]:
    return {"host": name, "segment": SEGMENT, "address": "127.0.0.1", "version": "bench"}


def register(serve: Serve, names: list[str]) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every agent's secret, and how registering went (mode, seconds)."""
    with serve.client() as admin:
        admin.post("/v1/segments", json={"name": SEGMENT}).raise_for_status()
    start = time.monotonic()
    with serve.client(AGENT, timeout=300) as client:
        probe = client.post("/v1/agents/register-batch", json={"agents": []})
        if probe.status_code in (404, 405):
            secrets, mode = _register_one_by_one(serve, names), "one request per agent"
        else:
            secrets, mode = _register_in_batches(client, names), f"batches of {BATCH}"
    return secrets, {"mode": mode, "seconds": round(time.monotonic() - start, 1)}


# Run by a controller's own interpreter and tree (e.g. an older commit's,
# which has no bulk registration and registers ~one agent a second at
# 3,000 hosts): the segment, hosts and agents written straight into its
# store before it starts, as its registration call would have written them.
_SEED = """
import json, sys
from vmha.adapters.store import open_store
from vmha.domain.agents import AgentRecord
from vmha.domain.model import Host, Segment
url, segment, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = open_store(url, migrate=True)
store.create_segment(Segment(name=segment))
for name, secret in json.load(sys.stdin).items():
    store.create_host(Host(name=name, segment=segment, address="127.0.0.1", state_since=now))
    store.save_agent(AgentRecord(host=name, secret=secret, version="bench", registered_at=now))
store.close()
"""


def seed(serve: Serve, names: list[str]) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every agent's secret, written into the store of a controller not yet
    started (`Serve.start` after this), with its own tree's store code."""
    assert serve.proc is None, "seed before the controller starts"
    secrets = {name: os.urandom(32).hex() for name in names}
    env = dict(os.environ)
    if serve.source is not None:
        env["PYTHONPATH"] = str(serve.source)
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", _SEED, f"sqlite:///{serve.db}", SEGMENT,
                    str(time.time())], input=json.dumps(secrets).encode(), env=env,
                   check=True)
    return ({n: s.encode() for n, s in secrets.items()},
            {"mode": "written into the store before start", "seconds":
             round(time.monotonic() - start, 1)})


def _register_in_batches(client: httpx.Client, names: list[str]) -> dict[str, bytes]:
    secrets: dict[str, bytes] = {}
    for i in range(0, len(names), BATCH):
        answer = client.post("/v1/agents/register-batch",
                             json={"agents": [_agent(n) for n in names[i:i + BATCH]]})
        answer.raise_for_status()
        secrets.update({a["host"]: a["secret"].encode() for a in answer.json()["agents"]})
    return secrets


def _register_one_by_one(serve: Serve, names: list[str]) -> dict[str, bytes]:
    local = threading.local()

    def one(name: str) -> tuple[str, bytes]:
        if not hasattr(local, "client"):
            local.client = serve.client(AGENT, timeout=300)
        answer = local.client.post("/v1/agents/register", json=_agent(name))
        answer.raise_for_status()
        return name, answer.json()["secret"].encode()

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, names))


# -- the listing client -----------------------------------------------------------


class Lister:
    """Walks `GET /v1/hosts` pages from `start` for `seconds`, in a thread."""

    def __init__(self, serve: Serve, page: int, start: float, seconds: float) -> None:
        self.serve, self.page, self.start_at, self.seconds = serve, page, start, seconds
        self.pages: list[tuple[float, float, int]] = []  # (start, seconds, status)
        self.walks: list[list[str]] = []  # host names of each complete walk
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        time.sleep(max(0.0, self.start_at - time.time()))
        with self.serve.client(timeout=600) as client:
            while time.time() < self.start_at + self.seconds:
                self._walk(client)

    def _walk(self, client: httpx.Client) -> None:
        marker: str | None = None
        names: list[str] = []
        while True:
            params: dict[str, Any] = {"limit": self.page}
            if marker:
                params["marker"] = marker
            began = time.time()
            try:
                answer = client.get("/v1/hosts", params=params)
            except httpx.HTTPError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            self.pages.append((began, time.time() - began, answer.status_code))
            if answer.status_code != 200:
                return
            page = answer.json()
            names.extend(h["name"] for h in page["items"])
            marker = page.get("next_marker")
            if not marker:
                self.walks.append(names)
                return
            if time.time() >= self.start_at + self.seconds:
                return

    def summary(self) -> dict[str, Any]:
        lat = sorted(p[1] for p in self.pages)
        out: dict[str, Any] = {"pages": len(lat), "errors": self.errors[:5],
                               "statuses": sorted({p[2] for p in self.pages})}
        if lat:
            out.update(p50_ms=round(statistics.median(lat) * 1000, 1),
                       max_ms=round(lat[-1] * 1000, 1),
                       p90_ms=round(lat[int(0.9 * (len(lat) - 1))] * 1000, 1),
                       window=[round(self.pages[0][0], 3),
                               round(max(p[0] + p[1] for p in self.pages), 3)])
        return out


# -- senders ---------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What the senders do: from `start_at`, until the end of `window`
    (sends and acks counted inside it); `silenced` stop at `silence_at`."""

    start_at: float
    window: tuple[float, float]
    senders: int = 4
    interval_s: float = 1.0
    silence_at: float = float("inf")
    silenced: frozenset[str] = field(default_factory=frozenset)
    more_targets: tuple[tuple[str, int], ...] = ()  # see SenderSpec
    route: Mapping[str, int] | None = None
    muted: Any = None  # see SenderSpec


def start_senders(load: Load, target: tuple[str, int],
                  secrets: dict[str, bytes]) -> list[tuple[mp.Process, Any]]:
    """One process per sender, on 127.0.(10+k).1; each reports a dict on
    its pipe when done (`run_sender`)."""
    shares = split_hosts(sorted(secrets.items()), load.senders, load.interval_s)
    ctx = mp.get_context("fork")
    out = []
    for k, share in enumerate(shares):
        address = f"127.0.{10 + k}.1"
        spec = SenderSpec(
            index=k, address=address, port=free_udp_port(address), target=target,
            hosts=share, start_at=load.start_at, stop_at=load.window[1], window=load.window,
            interval_s=load.interval_s, silence_at=load.silence_at, silenced=load.silenced,
            more_targets=load.more_targets, muted=load.muted,
            route=None if load.route is None else {h[0]: load.route[h[0]] for h in share})
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=run_sender, args=(spec, writer), daemon=True)
        proc.start()
        out.append((proc, reader))
    return out
