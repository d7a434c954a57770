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

`EventReporter` is created by `vmha.agent.main`; `push` must be called on
the loop thread (the hypervisor's event callbacks are). It never talks to
libvirt: the inventory comes from a callable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from vmha.agent.domains import DomainEvent, DomainView
from vmha.errors import VmhaError

log = logging.getLogger(__name__)

QUEUE_MAX = 1000
BATCH_MAX = 200
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 10.0
TIMEOUT = httpx.Timeout(3.0, connect=1.0)
Inventory = Callable[[], Awaitable[list[DomainView]]]


def event_json(event: DomainEvent) -> dict[str, Any]:
    return {"instance": event.uuid, "name": event.name, "kind": event.kind,
            "detail": event.detail, "requested": event.requested, "time": event.time}


class ControllerDown(Exception):
    """The controller did not take a request; retry later."""


class EventReporter:
    def __init__(self, url: str, host: str, token: str | None, boot_id: str,
                 inventory: Inventory | None = None, inventory_interval_s: float = 30.0,
                 queue_max: int = QUEUE_MAX, transport: httpx.AsyncBaseTransport | None = None,
                 ) -> None:
        self._base = f"{url.rstrip('/')}/v1/agents/{host}"
        self._boot_id = boot_id
        self._inventory = inventory
        self._interval = inventory_interval_s
        self._queue: deque[tuple[int, DomainEvent]] = deque()
        self._queue_max = queue_max
        self._seq = 0
        self._dropped = 0
        self._wake = asyncio.Event()
        self._inventory_due = inventory is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=TIMEOUT, transport=transport)
        self._task: asyncio.Task[None] | None = None
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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    # -- the sender ---------------------------------------------------------
    async def _run(self) -> None:
        backoff, last_inventory = BACKOFF_MIN_S, time.monotonic()
        while True:
            timeout = max(0.0, last_inventory + self._interval - time.monotonic())
            if not self._queue and not self._inventory_due:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout if self._inventory else None)
                except TimeoutError:
                    self._inventory_due = self._inventory is not None
            self._wake.clear()
            try:
                sent_inventory = await self._flush()
            except ControllerDown as exc:
                self.metrics["failures"] += 1
                log.warning("reporting to the controller at %s failed: %s; %d events wait, "
                            "retrying in %.1f s", self._base, exc, len(self._queue), backoff)
                await asyncio.sleep(backoff)
                if backoff == BACKOFF_MIN_S:
                    self._inventory_due = self._inventory is not None  # resend after recovery
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            except Exception:  # the top of a worker loop: log, keep going
                log.exception("event reporter failed; retrying in %.1f s", BACKOFF_MAX_S)
                await asyncio.sleep(BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
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
        url = self._base + path
        try:
            resp = await self._client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise ControllerDown(f"{method} {path}: {exc!r}") from exc
        if resp.is_success:
            return
        if resp.status_code in (400, 413, 422):  # will never be accepted: do not loop on it
            log.error("controller refused %s %s with %d: %s; dropping it", method, url,
                      resp.status_code, resp.text[:300])
            return
        if resp.status_code in (401, 403):
            log.error("controller refused %s %s with %d: check [controller] token",
                      method, url, resp.status_code)
        raise ControllerDown(f"{method} {path}: HTTP {resp.status_code}")
