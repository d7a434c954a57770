"""Sends the agent's domain events and inventory to the controller.

    POST {url}/v1/agents/{host}/events      Authorization: Bearer <token>
    {"boot_id": "<hex>", "events": [{"instance": "<uuid>", "name": "<domain>",
      "kind": "<kind>", "detail": "<text>", "requested": false, "time": <unix>}]}
    -> 202 {"accepted": N}
    PUT  {url}/v1/agents/{host}/inventory
    {"boot_id": "<hex>", "time": <unix>,
     "domains": [{"uuid", "name", "state", "reason"}]}  -> 200

Events leave in order, as soon as they are pushed (no batching delay:
whatever queued while a request was in flight goes in the next one). While
the controller is unreachable they wait in a bounded queue (oldest dropped
first, counted and logged) and are retried with backoff. The inventory goes
after a hypervisor (re)connect, after the controller answers again, and
every `inventory_interval_s`.

HTTP is a small keep-alive HTTP/1.1 client on asyncio streams and the one
HTTP/1.1 parser (`vmha.adapters.httpwire`, with its limits) rather than
httpx: importing httpx alone adds ~11 MiB to the agent's RSS (measured
46 vs 35 MiB), and the agent must stay below 60 MiB with libvirt loaded.

`EventReporter` is created by `vmha.agent.main`; `push` must be called on
the loop thread (the hypervisor's event callbacks are). It never talks to
libvirt: the inventory comes from a callable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from vmha.adapters import httpwire
from vmha.agent.domains import DomainEvent, DomainView
from vmha.domain import backoff
from vmha.errors import VmhaError

log = logging.getLogger(__name__)

QUEUE_MAX = 1000
BATCH_MAX = 200
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 10.0
# +-20 %: thousands of agents that lost the controller together do not all
# come back in the same instant (vmha.domain.backoff, the one formula)
BACKOFF_JITTER = 0.2
CONNECT_TIMEOUT_S = httpwire.CONTROLLER_CONNECT_TIMEOUT_S
REQUEST_TIMEOUT_S = httpwire.CONTROLLER_REQUEST_TIMEOUT_S
Inventory = Callable[[], Awaitable[list[DomainView]]]


def event_json(event: DomainEvent) -> dict[str, Any]:
    data: dict[str, Any] = {"instance": event.uuid, "name": event.name, "kind": event.kind,
                            "detail": event.detail, "requested": event.requested,
                            "time": event.time}
    if event.probe:
        data.update(probe=event.probe, count=event.count)
    return data


class ControllerDown(Exception):
    """The controller did not take a request; retry later."""


Answer = httpwire.Answer  # status, headers (names in lower case), body


class Client:
    """One kept-alive HTTP/1.1 connection to the controller (JSON in, status out).

    Also used by `vmha.agent.probesync` (a connection of its own) and for
    the one request of `vmha.agent.register`."""

    def __init__(self, url: str, token: str | None,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        self._timeout_s = timeout_s
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"controller.url {url!r} is not an http(s) URL")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        self._netloc = parts.netloc
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._headers["Content-Type"] = "application/json"
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: Any = None,
                      headers: Mapping[str, str] | None = None) -> Answer:
        """Send; retried once on a fresh connection when a kept-alive one was stale."""
        for fresh in (self._conn is None, True):
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._exchange(method, path, body, headers or {})
            except (OSError, ValueError, httpwire.ProtocolError, httpwire.Closed,
                    TimeoutError) as exc:
                self.close()
                if fresh:
                    raise ControllerDown(f"{method} {path}: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def _exchange(self, method: str, path: str, body: Any,
                        extra: Mapping[str, str]) -> Answer:
        if self._conn is None:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._conn = await httpwire.connect(self._host, self._port, self._ssl,
                                                    self._host)
        reader, writer = self._conn
        data = b"" if body is None else json.dumps(body).encode()
        writer.write(httpwire.encode_request(method, self._prefix + path, self._netloc,
                                             {**self._headers, **extra}, data))
        await writer.drain()
        answer, reusable = await httpwire.read_answer(reader, httpwire.CONTROLLER_BODY_MAX)
        if not reusable:
            self.close()
        return answer

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn[1].close()
            self._conn = None


class EventReporter:
    """`urls`: every controller's API (one URL, or several: a request that
    fails on one goes to the next at once; after all failed, backoff)."""

    def __init__(self, urls: str | Sequence[str], host: str, token: str | None, boot_id: str,
                 inventory: Inventory | None = None, inventory_interval_s: float = 30.0,
                 queue_max: int = QUEUE_MAX) -> None:
        self._urls = [u.rstrip("/") for u in ([urls] if isinstance(urls, str) else urls)]
        self._at = 0  # the controller in use
        self._base = f"/v1/agents/{host}"
        self._boot_id = boot_id
        self._inventory = inventory
        self._interval = inventory_interval_s
        self._queue: deque[tuple[int, DomainEvent]] = deque()
        self._queue_max = queue_max
        self._seq = 0
        self._dropped = 0
        self._wake = asyncio.Event()
        self._inventory_due = inventory is not None
        self._clients = [Client(u, token) for u in self._urls]
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.metrics = dict.fromkeys(("events_sent", "events_dropped", "inventories_sent",
                                      "failures"), 0)

    # -- called by the agent ----------------------------------------------
    def push(self, event: DomainEvent) -> None:
        """Queue one event for the controller (drops the oldest when full)."""
        if len(self._queue) >= self._queue_max:
            self._queue.popleft()
            self._dropped += 1
            self.metrics["events_dropped"] += 1
        self._seq += 1
        self._queue.append((self._seq, event))
        self._wake.set()

    def inventory_now(self) -> None:
        """Send the inventory soon (after a hypervisor (re)connect)."""
        if self._inventory is not None:
            self._inventory_due = True
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in self._clients:
            client.close()

    # -- the sender ---------------------------------------------------------
    async def _run(self) -> None:
        failures, last_inventory = 0, time.monotonic()
        while not self._stopping:
            timeout = max(0.0, last_inventory + self._interval - time.monotonic())
            if not self._queue and not self._inventory_due:
                try:  # asyncio.timeout: 3.11's wait_for can swallow a cancel
                    async with asyncio.timeout(timeout if self._inventory else None):
                        await self._wake.wait()
                except TimeoutError:
                    self._inventory_due = self._inventory is not None
            self._wake.clear()
            try:
                sent_inventory = await self._flush()
            except ControllerDown as exc:
                self.metrics["failures"] += 1
                delay = backoff.delay_s(failures, BACKOFF_MIN_S, BACKOFF_MAX_S, BACKOFF_JITTER,
                                        random.random())
                log.warning("reporting to the controller at %s failed: %s; %d events wait, "
                            "retrying in %.1f s", " or ".join(self._urls), exc,
                            len(self._queue), delay)
                await asyncio.sleep(delay)
                if failures == 0:
                    self._inventory_due = self._inventory is not None  # resend after recovery
                failures += 1
                continue
            except Exception:  # the top of a worker loop: log, keep going
                log.exception("event reporter failed; retrying in %.1f s", BACKOFF_MAX_S)
                await asyncio.sleep(BACKOFF_MAX_S)
                continue
            failures = 0
            if sent_inventory:
                last_inventory = time.monotonic()

    async def _flush(self) -> bool:
        """Send every queued event, then the inventory if due."""
        if self._dropped:
            log.warning("event queue full (%d): dropped the %d oldest domain events meant "
                        "for the controller", self._queue_max, self._dropped)
            self._dropped = 0
        while self._queue:
            batch = list(self._queue)[:BATCH_MAX]
            await self._send("POST", "/events", {
                "boot_id": self._boot_id, "events": [event_json(e) for _, e in batch]})
            last = batch[-1][0]
            while self._queue and self._queue[0][0] <= last:
                self._queue.popleft()
            self.metrics["events_sent"] += len(batch)
        if not self._inventory_due or self._inventory is None:
            return False
        try:
            views = await self._inventory()
        except VmhaError as exc:  # hypervisor not connected: its reconnect asks again
            log.info("inventory not sent: %s", exc.detail)
            self._inventory_due = False
            return False
        await self._send("PUT", "/inventory", {
            "boot_id": self._boot_id, "time": time.time(),
            "domains": [v.to_json() for v in views]})
        self._inventory_due = False
        self.metrics["inventories_sent"] += 1
        return True

    async def _send(self, method: str, path: str, body: dict[str, Any]) -> None:
        """To the controller in use; when it does not take it, to each other
        one in turn (ControllerDown once all refused)."""
        failed: ControllerDown | None = None
        for _ in range(len(self._clients)):
            try:
                await self._send_to(self._at, method, path, body)
                return
            except ControllerDown as exc:
                failed = exc
                if len(self._clients) > 1:
                    self._at = (self._at + 1) % len(self._clients)
                    log.info("%s; trying the controller at %s", exc, self._urls[self._at])
        assert failed is not None
        raise failed

    async def _send_to(self, at: int, method: str, path: str, body: dict[str, Any]) -> None:
        url = self._urls[at] + self._base + path
        answer = await self._clients[at].request(method, self._base + path, body)
        status, payload = answer.status, answer.body
        if 200 <= status < 300:
            return
        if status in (400, 413, 422):  # will never be accepted: do not loop on it
            log.error("controller refused %s %s with %d: %s; dropping it", method, url,
                      status, payload[:300].decode("utf-8", "replace"))
            return
        if status in (401, 403):
            log.error("controller refused %s %s with %d: check [controller] token",
                      method, url, status)
        raise ControllerDown(f"{method} {path}: HTTP {status}")
