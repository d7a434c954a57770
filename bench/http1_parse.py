"""HTTP/1.1 parsing cost: vmha's one parser (vmha.adapters.httpwire) vs h11.

The choice behind `vmha.adapters.httpwire` (issue 13 asked for h11): per
message, how much CPU does each take for the exchanges vmha makes?

- `webhook_post`: the client side of one webhook delivery: write the POST
  (a ~600-byte CloudEvents body, vmha's signature headers), read a typical
  receiver's answer (`204` with a few headers);
- `agent_request`: the server side of one agent API call: read the
  controller's `POST /v1/probe` (httpx's headers), write the JSON answer.

Both parsers read from an `asyncio.StreamReader` that already holds the
bytes (h11: its `Connection.receive_data`/`next_event`), so what is timed is
the parsing and writing alone, no sockets: CPU seconds per message over
`--count` messages, best of `--repeat` runs. Writes
bench/results/http1_parse.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import h11

from vmha.adapters import httpwire

RESULTS = Path(__file__).parent / "results" / "http1_parse.json"

BODY = json.dumps({"specversion": "1.0", "type": "vmha.host.failed", "source": "/vmha",
                   "id": "0" * 26, "time": "2026-12-07T12:00:00Z",
                   "data": {"host": "host7", "segment": "rack-1", "reason": "x" * 400}}).encode()
POST_HEADERS = {"Content-Type": "application/cloudevents+json", "User-Agent": "vmha/0.1",
                "X-Vmha-Event": "0" * 26, "X-Vmha-Timestamp": "1796644800",
                "X-Vmha-Signature": "v1=" + "a" * 64}
ANSWER = (b"HTTP/1.1 204 No Content\r\ndate: Mon, 07 Dec 2026 12:00:00 GMT\r\n"
          b"server: uvicorn\r\ncontent-type: application/json\r\n\r\n")
PROBE = json.dumps({"targets": ["host2", "host3"], "timeout_s": 1.0}).encode()
PROBE_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive",
                 "User-Agent": "python-httpx/0.28.1", "Authorization": "Bearer " + "t" * 43,
                 "Content-Type": "application/json"}
REPLY = json.dumps({"host2": True, "host3": False}).encode()


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=httpwire.HEAD_MAX)
    reader.feed_data(data)
    return reader


async def own_webhook_post() -> None:
    httpwire.encode_request("POST", "/hook", "receiver.example:8080", POST_HEADERS, BODY)
    answer, _ = await httpwire.read_answer(_reader(ANSWER), httpwire.WEBHOOK_BODY_KEPT,
                                           httpwire.WEBHOOK_DRAIN_MAX)
    assert answer.status == 204


async def h11_webhook_post() -> None:
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", "receiver.example:8080"), ("Content-Length", str(len(BODY))),
               *POST_HEADERS.items()]
    conn.send(h11.Request(method="POST", target="/hook", headers=headers))
    conn.send(h11.Data(data=BODY))
    conn.send(h11.EndOfMessage())
    reader = _reader(ANSWER)
    conn.receive_data(await reader.read(httpwire.HEAD_MAX))  # the same bytes, no socket
    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Response):
            assert event.status_code == 204


PROBE_REQUEST = httpwire.encode_request("POST", "/v1/probe", "198.18.0.11:8792", PROBE_HEADERS,
                                        PROBE)


async def own_agent_request() -> None:
    request = await httpwire.read_request(_reader(PROBE_REQUEST), httpwire.AGENT_BODY_MAX)
    assert request.body == PROBE
    httpwire.encode_response(200, {"Content-Type": "application/json", "Connection": "close"},
                             REPLY)


async def h11_agent_request() -> None:
    conn = h11.Connection(h11.SERVER)
    reader = _reader(PROBE_REQUEST)
    conn.receive_data(await reader.read(httpwire.HEAD_MAX))
    body = b""
    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Data):
            body += event.data
    assert body == PROBE
    conn.send(h11.Response(status_code=200, headers=[
        ("Content-Type", "application/json"), ("Connection", "close"),
        ("Content-Length", str(len(REPLY)))]))
    conn.send(h11.Data(data=REPLY))
    conn.send(h11.EndOfMessage())


async def _time(make: Callable[[], object], count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        await make()  # type: ignore[misc]
    return (time.process_time() - started) / count


async def measure(count: int, repeat: int) -> dict[str, dict[str, float]]:
    cases = {"webhook_post": (own_webhook_post, h11_webhook_post),
             "agent_request": (own_agent_request, h11_agent_request)}
    out: dict[str, dict[str, float]] = {}
    for name, (own, other) in cases.items():
        own_s = min([await _time(own, count) for _ in range(repeat)])
        h11_s = min([await _time(other, count) for _ in range(repeat)])
        out[name] = {"httpwire_us": round(own_s * 1e6, 2), "h11_us": round(h11_s * 1e6, 2),
                     "h11_over_httpwire": round(h11_s / own_s, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cases = asyncio.run(measure(args.count, args.repeat))
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    result = {
        "benchmark": "http1_parse",
        "what": "CPU per exchange, parse and write only (no sockets): httpwire vs h11",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "settings": {"count": args.count, "repeat": args.repeat, "h11": h11.__version__},
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
