"""The running host agent: heartbeats, peer probes, watchdog, isolation.

`Agent` owns one UDP socket (the API listen address, default 8792/udp)
from which it sends signed heartbeats to every controller address and on
which it receives the controllers' acks, peers' probes and probe replies.
`tick()` runs once per heartbeat interval (`run_schedule` keeps the ticks
on a fixed grid: no drift, no bursts after a stall). Time comes from a
Clock; the only real I/O is the socket, the watchdog and the hook.

Peer probes: a probe carries a random 64-bit nonce and is signed with the
segment secret; the peer answers with a reply echoing the nonce, signed
with the same secret. The prober accepts a reply only for a nonce it sent
to that peer name. Without a segment secret probing is off (probes answer
False, and only a controller counts as contact).

Called by `vmha.agent.main` (and tests); it never talks to the store.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from vmha.adapters.heartbeat.wire import Datagram, DatagramRejected, Kind, decode, encode, parse
from vmha.agent.config import AgentConfig
from vmha.agent.isolation import IsolationMonitor, Verdict, initial_contact
from vmha.agent.watchdog import Watchdog
from vmha.ports import Clock

log = logging.getLogger(__name__)

StopVms = Callable[[], Awaitable[None]]
PENDING_MAX = 1024
STARTUP_GRACE = 2  # heartbeat intervals of contact a (re)started agent assumes
SAVE_EVERY = 5  # persist the last contact at most every this many intervals


async def no_local_domains() -> None:
    """Default stop-vms hook until the libvirt adapter exists: nothing runs."""
    log.warning("isolation: stop-vms requested; no hypervisor adapter, nothing to stop")


@dataclass(frozen=True)
class Identity:
    host: str
    segment: str
    boot_id: bytes
    secret: bytes
    segment_secret: bytes | None


async def run_schedule(
    clock: Clock, interval_s: float, tick: Callable[[], Awaitable[None]]
) -> None:
    """Call `tick` at start + k * interval for ever (cancel to stop).

    A slow tick or a stalled process does not shift later ticks, and missed
    slots are skipped rather than sent in a burst.
    """
    start = clock.now()
    k = 0
    while True:
        await tick()
        k += 1
        now = clock.now()
        if start + k * interval_s <= now:
            k = math.floor((now - start) / interval_s) + 1
        await clock.sleep(start + k * interval_s - now)


class Agent(asyncio.DatagramProtocol):
    def __init__(
        self, cfg: AgentConfig, ident: Identity, clock: Clock, watchdog: Watchdog,
        stop_vms: StopVms = no_local_domains, saved_contact: float | None = None,
        save_contact: Callable[[float], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ident = ident
        self._clock = clock
        self._watchdog = watchdog
        self._stop_vms = stop_vms
        self._controllers = cfg.controller.addresses()
        self._peers = cfg.peer_addresses()
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[bool] | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.seq = 0
        self.last_verdict = Verdict(True, 0.0, True, False)
        window, interval = cfg.contact_window_s(), cfg.heartbeat_interval_s
        self.monitor = IsolationMonitor(
            self._peers, window, cfg.isolation.timeout_s, cfg.isolation.action,
            initial_contact(clock.now(), saved_contact, window, STARTUP_GRACE * interval),
        )
        self._save_contact = save_contact
        self._saved_at = self.monitor.last_contact()
        self.metrics = dict.fromkeys(
            ("heartbeats_sent", "send_errors", "acks", "probes_answered", "probe_replies",
             "rejected"), 0
        )

    # -- UDP --------------------------------------------------------------
    async def open(self) -> None:
        """Bind the UDP socket on the API listen address."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=self.cfg.api.hostport())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for task in self._tasks:
            task.cancel()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not a DatagramTransport
        # subclass on every Python version; it has the same methods.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        self.metrics["send_errors"] += 1
        log.debug("udp error: %s", exc)  # e.g. unreachable while the link is down

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg = parse(data)
            if msg.kind is Kind.ACK:
                self._on_ack(decode(data, self.ident.secret))
            elif self.ident.segment_secret is None:
                raise DatagramRejected("unknown_host", "no segment secret: probes are off")
            elif msg.kind is Kind.PROBE:
                self._on_probe(decode(data, self.ident.segment_secret), addr)
            elif msg.kind is Kind.PROBE_REPLY:
                self._on_probe_reply(decode(data, self.ident.segment_secret))
        except DatagramRejected as rej:
            self.metrics["rejected"] += 1
            log.debug("dropped datagram from %s: %s", addr, rej.detail)

    def _send(self, msg: Datagram, key: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(encode(msg, key), addr)

    def _on_ack(self, msg: Datagram) -> None:
        fresh = msg.boot_id == self.ident.boot_id and self.seq - 3 <= msg.seq <= self.seq
        if msg.host == self.ident.host and fresh:
            self.metrics["acks"] += 1
            self.monitor.controller_contact(self._clock.now())

    def _on_probe(self, msg: Datagram, addr: Any) -> None:
        self.metrics["probes_answered"] += 1
        reply = Datagram(Kind.PROBE_REPLY, self.ident.host, self.ident.boot_id, msg.seq,
                         self._clock.now())
        assert self.ident.segment_secret is not None
        self._send(reply, self.ident.segment_secret, addr)

    def _on_probe_reply(self, msg: Datagram) -> None:
        peer, fut = self._pending.get(msg.seq, (None, None))
        if peer is None or peer != msg.host:
            return
        del self._pending[msg.seq]
        self.metrics["probe_replies"] += 1
        self.monitor.peer_contact(peer, self._clock.now())
        if fut is not None and not fut.done():
            fut.set_result(True)

    def _send_probe(self, peer: str, fut: asyncio.Future[bool] | None) -> int:
        if len(self._pending) >= PENDING_MAX:  # unanswered probes: forget the oldest
            self._pending.pop(next(iter(self._pending)))
        nonce = secrets.randbits(64)
        self._pending[nonce] = (peer, fut)
        msg = Datagram(Kind.PROBE, self.ident.host, self.ident.boot_id, nonce, self._clock.now())
        assert self.ident.segment_secret is not None
        self._send(msg, self.ident.segment_secret, self._peers[peer])
        return nonce

    async def probe(self, peer: str, timeout_s: float) -> bool:
        """Whether `peer`'s agent answers a signed probe within `timeout_s`."""
        if self.ident.segment_secret is None or peer not in self._peers:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        nonces = []
        attempts = 3  # spread over the timeout: one lost datagram is not a verdict
        try:
            for _ in range(attempts):
                nonces.append(self._send_probe(peer, fut))
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), timeout_s / attempts)
                except TimeoutError:
                    continue
            return False
        finally:
            for nonce in nonces:
                self._pending.pop(nonce, None)

    # -- the loop ---------------------------------------------------------
    async def tick(self) -> None:
        """One heartbeat interval: send, probe if needed, judge isolation."""
        now = self._clock.now()
        self.seq += 1
        beat = Datagram(Kind.HEARTBEAT, self.ident.host, self.ident.boot_id, self.seq, now)
        for addr in self._controllers:
            self._send(beat, self.ident.secret, addr)
        self.metrics["heartbeats_sent"] += 1
        if self.ident.segment_secret and self.monitor.controller_silent_for(now) > 1.5 * (
            self.cfg.heartbeat_interval_s
        ):
            for peer in self._peers:  # answers only refresh the monitor
                self._send_probe(peer, None)
        verdict = self.monitor.evaluate(now)
        if verdict.in_contact != self.last_verdict.in_contact:
            log.warning("%s: %s", self.ident.host,
                        "contact restored" if verdict.in_contact else "isolated: no contact")
        self.last_verdict = verdict
        self._persist_contact()
        if verdict.feed:
            self._watchdog.feed()
        if verdict.act:
            self._act()

    def _persist_contact(self) -> None:
        last = self.monitor.last_contact()
        if self._save_contact is None or last - self._saved_at < SAVE_EVERY * (
            self.cfg.heartbeat_interval_s
        ):
            return
        self._saved_at = last
        try:
            self._save_contact(last)
        except OSError as exc:
            log.error("cannot save the agent state: %s", exc)

    def _act(self) -> None:
        action = self.cfg.isolation.action
        log.error("%s: isolated for %.1f s: taking isolation action %s",
                  self.ident.host, self.last_verdict.isolated_for, action)
        if action == "stop-vms":
            task = asyncio.ensure_future(self._run_stop_vms())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_stop_vms(self) -> None:
        try:
            await asyncio.wait_for(self._stop_vms(), self.cfg.watchdog.timeout_s)
        except Exception:
            log.exception("stop-vms hook failed: stopping the watchdog feed instead")
            self.monitor.hook_failed()

    def health(self) -> dict[str, Any]:
        now = self._clock.now()
        return {
            "host": self.ident.host, "segment": self.ident.segment,
            "boot_id": self.ident.boot_id.hex(), "seq": self.seq,
            "controller_silent_s": round(self.monitor.controller_silent_for(now), 3),
            "in_contact": self.last_verdict.in_contact,
            "isolated_for_s": round(self.last_verdict.isolated_for, 3),
            "self_fencing": self.monitor.self_fencing, "metrics": dict(self.metrics),
        }

    @property
    def watchdog_armed(self) -> bool:
        """A real watchdog is fed (not backend none) and not given up on."""
        return self.cfg.watchdog.backend != "none" and not self.monitor.self_fencing

    def close_watchdog(self) -> None:
        """Disarm on a clean stop, but never while self-fencing."""
        if not self.monitor.self_fencing:
            self._watchdog.close()
