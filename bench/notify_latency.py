"""Notification latency: from an event's commit to its receipt.

The controller side runs as in `vmha serve`, with its default `[events]`
settings: the API (uvicorn, for the SSE stream) and the webhook dispatcher
on one event loop, on a SQLite file store, woken by the in-process bus at
each commit (`--no-bus`: polling only, as before issue 13). A producer
thread commits events one per transaction at a fixed rate and notes the
commit time of each event id. A separate receiver
process runs 10 webhook receivers (tiny HTTP servers on 127.0.0.1) and one
SSE client, and notes when each event arrives. Latency = arrival - commit
(same machine, same wall clock).

Rates: 1, 100 and 1,000 events/s; scenarios: all 10 subscribers up, and
one of the 10 down (its URL refuses connections; the figures are for the
9 others). Writes bench/results/notify_latency.json.

    .venv/bin/python bench/notify_latency.py [--rates 1,100,1000] [--seconds 1=10,100=5,1000=3]
        [--no-bus] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import labrun  # bench/labrun.py (this script's folder is on sys.path)
import uvicorn

from vmha.adapters.bus.dispatcher import Dispatcher
from vmha.adapters.bus.local import LocalBus
from vmha.adapters.bus.webhook import WebhookSender
from vmha.adapters.store import open_store
from vmha.adapters.store.sql import SqlStore
from vmha.adapters.system import SystemClock, UuidGen
from vmha.api import create_app
from vmha.config import Settings
from vmha.controller.service import dispatch_settings
from vmha.domain.model import Event, SubjectKind
from vmha.ports import Subscription

RESULTS = Path(__file__).parent / "results" / "notify_latency.json"
TOKEN = "bench-admin-token"
SUBSCRIBERS = 10
SECRET = "bench-secret-0123456789"
DRAIN_S = 5.0  # wait this long after the last event for stragglers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- receiver process -------------------------------------------------------


async def _webhook_server(port: int, arrivals: dict[int, float]) -> asyncio.AbstractServer:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                    elif line.lower().startswith(b"vmha-event-id:"):
                        event_id = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                arrivals.setdefault(event_id, time.time())
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the sender closed, or the process is ending
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", port)


async def _sse_client(api: str, arrivals: dict[int, float], ready: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # No read timeout: the stream may stay quiet for a while at 1 event/s.
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(timeout=timeout) as client, client.stream(
        "GET", f"{api}/v1/events/stream", headers=headers
    ) as response:
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                arrivals.setdefault(int(line[4:]), time.time())


def receiver_main(ports: list[int], api: str, conn: Any, ready: Any) -> None:
    async def run() -> None:
        hooks: list[dict[int, float]] = [{} for _ in ports]
        sse: dict[int, float] = {}
        servers = [await _webhook_server(p, a) for p, a in zip(ports, hooks, strict=True)]
        task = asyncio.create_task(_sse_client(api, sse, ready))
        cpu0 = time.process_time()
        await asyncio.to_thread(conn.recv)  # "stop"
        cpu_s = time.process_time() - cpu0
        task.cancel()
        for server in servers:
            server.close()
        conn.send({"hooks": hooks, "sse": sse, "cpu_s": cpu_s})

    asyncio.run(run())


# -- controller side --------------------------------------------------------


def produce(store: SqlStore, rate: float, seconds: float, commits: dict[int, float]) -> None:
    """Commit `rate` events a second for `seconds`, one per transaction."""
    total = max(1, round(rate * seconds))
    start = time.perf_counter()
    for n in range(total):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event = Event("instance.crashed", f"vm-{n}", time.time(), SubjectKind.INSTANCE, "p1",
                      payload={"host": "h1", "n": n})
        stored = store.append_events([event])
        commits[stored[0].id] = time.time()


def summary(latencies: list[float], expected: int) -> dict[str, Any]:
    if not latencies:
        return {"count": 0, "lost": expected}
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return {"count": len(ordered), "lost": expected - len(ordered),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(ordered[-1] * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}


async def run_case(rate: float, seconds: float, down: bool, bus: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/vmha.db", migrate=True)
        try:
            return await _case_on(store, rate, seconds, down, LocalBus() if bus else None)
        finally:
            store.close()


PIPELINE: dict[str, int] = {}  # --pipeline, when given


def settings_of() -> Settings:
    return Settings.model_validate({
        "api": {"tokens": [{"token": TOKEN, "role": "admin"}]},
        "events": {"allow_private_destinations": True, **PIPELINE},
    })


async def _case_on(store: SqlStore, rate: float, seconds: float, down: bool,
                   bus: LocalBus | None) -> dict[str, Any]:
    settings = settings_of()
    clock = SystemClock()
    api_port, ports = free_port(), [free_port() for _ in range(SUBSCRIBERS)]
    dead_port = free_port()  # nothing listens here
    for i, port in enumerate(ports):
        target = dead_port if down and i == 0 else port
        store.create_subscription(Subscription(
            id=f"sub-{i}", url=f"http://127.0.0.1:{target}/hook", secret=SECRET,
            event_types=("instance.*",), cursor=store.last_event_id()))
    app = create_app(settings, store, clock, UuidGen())
    if bus is not None:  # wired as vmha.controller.service does
        bus.bind(asyncio.get_running_loop())
        store.on_commit = bus.committed
        app.state.vmha.bus = bus
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port,
                                           log_level="warning", timeout_graceful_shutdown=1))
    sender = WebhookSender(clock, timeout_s=5.0, allow_private=True)
    dispatcher = Dispatcher(store, clock, sender, dispatch_settings(settings.events),
                            random.Random(1), bus=bus)
    tasks = [asyncio.create_task(server.serve()), asyncio.create_task(dispatcher.run())]
    while not server.started:
        await asyncio.sleep(0.01)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    ready = ctx.Event()
    proc = ctx.Process(target=receiver_main,
                       args=(ports, f"http://127.0.0.1:{api_port}", child, ready))
    proc.start()
    await asyncio.to_thread(ready.wait, 30)
    await asyncio.sleep(0.5)  # receivers and SSE connected, workers idle

    commits: dict[int, float] = {}
    cpu0 = time.process_time()
    await asyncio.to_thread(produce, store, rate, seconds, commits)
    await asyncio.sleep(DRAIN_S if rate > 1 else 1.0)
    cpu_s = time.process_time() - cpu0
    parent.send("stop")
    got = await asyncio.to_thread(parent.recv)
    proc.join(10)

    await dispatcher.stop()
    server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await sender.aclose()

    live = range(1, SUBSCRIBERS) if down else range(SUBSCRIBERS)
    hook_lat = [got["hooks"][i][e] - t for i in live for e, t in commits.items()
                if e in got["hooks"][i]]
    sse_lat = [got["sse"][e] - t for e, t in commits.items() if e in got["sse"]]
    return {
        "rate_per_s": rate, "seconds": seconds, "events": len(commits),
        "subscribers": SUBSCRIBERS, "down": 1 if down else 0,
        "webhook": summary(hook_lat, len(commits) * len(live)),
        "sse": summary(sse_lat, len(commits)),
        "controller_cpu_s": round(cpu_s, 2),  # while producing and draining
        "receivers_cpu_s": round(got["cpu_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,100,1000")
    parser.add_argument("--seconds", default="1=10,100=5,1000=3",
                        help="duration per rate, RATE=SECONDS,...")
    parser.add_argument("--no-bus", action="store_true",
                        help="poll only (no in-process bus), as before issue 13")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pipeline", type=int, default=None,
                        help="[events] pipeline (default: the configuration's default)")
    args = parser.parse_args()
    if args.pipeline is not None:
        PIPELINE["pipeline"] = args.pipeline
    durations = {float(k): float(v) for k, v in
                 (pair.split("=") for pair in args.seconds.split(","))}
    cases = []
    for down in (False, True):
        for rate in (float(r) for r in args.rates.split(",")):
            case = asyncio.run(run_case(rate, durations.get(rate, 5.0), down, not args.no_bus))
            cases.append(case)
            print(json.dumps(case))
    result = {
        "benchmark": "notify_latency",
        "what": "commit -> receipt latency, webhooks (10 subscribers) and one SSE client",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": mp.cpu_count()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": labrun.commit(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "store": "sqlite (WAL, file)",
        "settings": {"events": settings_of().events.model_dump(
            include={"poll_interval_s", "refresh_s", "checkpoint_s", "timeout_s", "pipeline"}),
            "bus": not args.no_bus},
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
