"""The agent's connection to its host's libvirt: domain operations and events.

`LibvirtHypervisor(uri, on_event)` opens `uri` (`qemu:///system`, a
host's own libvirtd, or the embedded driver `qemu:///embed?root=DIR`),
reconnects with backoff when the connection drops (libvirtd restarts),
and turns libvirt's domain events into `DomainEvent`s handed to
`on_event` on the asyncio loop thread. Operations are idempotent and keyed
by the domain UUID (= the instance id): asking twice is harmless.

Blocking libvirt calls run on a small thread pool: with the embedded
driver the QEMU monitor I/O needs the asyncio loop to keep running, so
they must never run on the loop thread.

Called by `vmha.agent.main` (and the agent's HTTP API through it). It
does not talk to the controller: `vmha.agent.report` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import libvirt

from vmha.agent.domains import (
    ACTIONS,
    DomainEvent,
    DomainView,
    absent,
    canonical_uuid,
    parse_domain_xml,
)
from vmha.agent.libvirt_loop import bind_event_loop
from vmha.domain import backoff
from vmha.errors import Conflict, NotFound, TemporaryError, ValidationError, VmhaError

__all__ = ["DomainEvent", "DomainView", "LibvirtHypervisor", "translate"]

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_WINDOW_S = 30.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0
RECONNECT_JITTER = 0.2  # +-20 % (vmha.domain.backoff, the one formula)
EMBED_QEMU_CONF = (
    "# Written by the vmha agent for its embedded libvirt root.\n"
    'stdio_handler = "file"\n'
    "remember_owner = 0\n"
    # The lab keeps host directories private (0700): QEMU as libvirt-qemu
    # could not reach its own files under the root.
    'user = "root"\n'
    'group = "root"\n'
)

# libvirt state -> (our state, reason names by libvirt reason number)
_STATES: dict[int, tuple[str, tuple[str, ...]]] = {
    libvirt.VIR_DOMAIN_NOSTATE: ("running", ("unknown",)),  # conservative: may run
    libvirt.VIR_DOMAIN_RUNNING: ("running", (
        "unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
        "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy",
        "postcopy_failed")),
    libvirt.VIR_DOMAIN_BLOCKED: ("running", ("unknown",)),
    libvirt.VIR_DOMAIN_PAUSED: ("paused", (
        "unknown", "user", "migration", "save", "dump", "ioerror", "watchdog",
        "from_snapshot", "shutting_down", "snapshot", "crashed", "starting_up", "postcopy",
        "postcopy_failed", "api_error")),
    libvirt.VIR_DOMAIN_SHUTDOWN: ("running", ("shutting_down", "user")),
    libvirt.VIR_DOMAIN_SHUTOFF: ("shutoff", (
        "unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
        "from_snapshot", "daemon")),
    libvirt.VIR_DOMAIN_CRASHED: ("crashed", ("unknown", "panicked")),
    libvirt.VIR_DOMAIN_PMSUSPENDED: ("pmsuspended", ("unknown",)),
}
# lifecycle event -> (our kind or None to skip, detail names by number)
_LIFECYCLE: dict[int, tuple[str | None, tuple[str, ...]]] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: ("started", (
        "booted", "migrated", "restored", "from_snapshot", "wakeup")),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("paused", (
        "paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot",
        "api_error", "postcopy", "postcopy_failed")),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: ("resumed", (
        "unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed")),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: ("stopped", (
        "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot")),
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: ("paused", ("pmsuspended", "pmsuspended_disk")),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: ("crashed", ("panicked", "crashloaded")),
}
_WATCHDOG = ("none", "pause", "reset", "poweroff", "shutdown", "debug", "inject-nmi")
# an API action -> the event kinds it explains (they are reported requested=True)
_EXPLAINS = {
    "start": {"started", "resumed"}, "destroy": {"stopped"}, "shutdown": {"stopped"},
    "undefine": {"stopped"}, "reset": {"rebooted"}, "reboot": {"rebooted"},
    "inject-nmi": {"crashed"},
}
_CONN_ERRORS = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC,
                libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_AGENT_UNRESPONSIVE}
_INPUT_ERRORS = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL,
                 libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG,
                 libvirt.VIR_ERR_XML_INVALID_SCHEMA}


def _name(table: tuple[str, ...], index: int) -> str:
    return table[index] if 0 <= index < len(table) else f"unknown-{index}"


def view_of(uuid: str, name: str, state: int, reason: int) -> DomainView:
    ours, reasons = _STATES.get(state, ("running", ()))
    return DomainView(uuid, name, ours, _name(reasons, reason))


def embed_root(uri: str) -> Path | None:
    """DIR of `qemu:///embed?root=DIR`, None for other URIs."""
    parts = urlsplit(uri)
    if parts.scheme != "qemu" or parts.path != "/embed":
        return None
    roots = parse_qs(parts.query).get("root", [])
    return Path(roots[0]) if roots else None


def write_embed_config(root: Path) -> None:
    conf = root / "etc" / "qemu.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists() or conf.read_text() != EMBED_QEMU_CONF:
        conf.write_text(EMBED_QEMU_CONF)


def translate(exc: libvirt.libvirtError, what: str) -> VmhaError:
    """A libvirt error as one of vmha's, with libvirt's message."""
    code, msg = exc.get_error_code(), exc.get_error_message() or str(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound("domain", what)
    if code in _CONN_ERRORS:
        return TemporaryError(f"libvirt: {what}: {msg}", 2.0)
    if code in _INPUT_ERRORS:
        return ValidationError("xml", f"libvirt refused {what}: {msg}")
    return Conflict(f"libvirt refused {what}: {msg}")


class LibvirtHypervisor:
    def __init__(self, uri: str, on_event: Callable[[DomainEvent], None],
                 on_connect: Callable[[], None] | None = None,
                 request_window_s: float = REQUEST_WINDOW_S) -> None:
        self.uri = uri
        self._on_event = on_event
        self._on_connect = on_connect
        self._window = request_window_s
        self._conn: libvirt.virConnect | None = None
        self._callbacks: list[int] = []
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="libvirt")
        self._locks: dict[str, asyncio.Lock] = {}
        self._requests: dict[str, tuple[str, float]] = {}  # uuid -> (action, monotonic)
        self._paused: set[str] = set()
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # -- connection -------------------------------------------------------
    async def open(self) -> None:
        """Connect now; on failure keep retrying in the background (logged)."""
        bind_event_loop()
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised
        root = embed_root(self.uri)
        if root is not None:
            write_embed_config(root)
        try:
            await self._connect()
        except TemporaryError as exc:
            log.warning("hypervisor %s: %s; retrying in the background", self.uri, exc.detail)
            self._schedule_reconnect()

    async def _connect(self) -> None:
        try:
            conn = await self._run(libvirt.open, self.uri)
        except libvirt.libvirtError as exc:
            raise TemporaryError(f"cannot open {self.uri}: {exc.get_error_message()}",
                                 RECONNECT_MIN_S) from exc
        with contextlib.suppress(libvirt.libvirtError):  # remote drivers only
            conn.setKeepAlive(5, 3)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._closed, None)
        self._register_events(conn)
        self._conn = conn
        self._paused = {v.uuid for v in await self.inventory() if v.state == "paused"}
        log.info("hypervisor %s connected", self.uri)
        if self._on_connect is not None:
            self._on_connect()

    def _register_events(self, conn: libvirt.virConnect) -> None:
        ids = (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, self._watchdog),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._agent),
        )
        self._callbacks = [conn.domainEventRegisterAny(None, eid, cb, None) for eid, cb in ids]

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("hypervisor %s: connection closed (reason %d); reconnecting", self.uri, reason)
        self._conn = None
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closing or (self._reconnect is not None and not self._reconnect.done()):
            return
        self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        failures = 0
        delay = _reconnect_delay(failures)
        while not self._closing and self._conn is None:
            await asyncio.sleep(delay)
            try:
                await self._connect()
            except TemporaryError as exc:
                failures += 1
                delay = _reconnect_delay(failures)
                log.warning("hypervisor %s: %s; retrying in %.1f s", self.uri, exc.detail, delay)

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            for cb_id in self._callbacks:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.domainEventDeregisterAny(cb_id)
            with contextlib.suppress(libvirt.libvirtError):
                await self._run(conn.close)
        self._pool.shutdown(wait=False)

    # -- plumbing ---------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _need(self) -> libvirt.virConnect:
        if self._conn is None:
            raise TemporaryError(f"hypervisor {self.uri} is not connected; retry shortly", 2.0)
        return self._conn

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        conn = self._need()
        try:
            return await self._run(fn, *args)
        except libvirt.libvirtError as exc:
            err = translate(exc, what)
            if isinstance(err, TemporaryError) and not conn.isAlive():
                self._conn = None
                self._schedule_reconnect()
            raise err from exc

    async def lookup(self, uuid: str) -> libvirt.virDomain | None:
        """The libvirt domain of `uuid`, None when it does not exist."""
        return await self._lookup(canonical_uuid(uuid))

    async def _lookup(self, uuid: str) -> libvirt.virDomain | None:
        conn = self._need()
        try:
            return await self._call(uuid, conn.lookupByUUIDString, uuid)
        except NotFound:
            return None

    async def _view(self, dom: libvirt.virDomain, uuid: str) -> DomainView:
        try:
            state, reason = await self._call(uuid, dom.state)
        except NotFound:
            return absent(uuid)
        return view_of(uuid, dom.name(), state, reason)

    def _lock(self, uuid: str) -> asyncio.Lock:
        return self._locks.setdefault(uuid, asyncio.Lock())

    def _request(self, uuid: str, action: str) -> None:
        self._requests[uuid] = (action, time.monotonic())

    # -- queries ----------------------------------------------------------
    async def state(self, uuid: str) -> DomainView:
        uuid = canonical_uuid(uuid)
        dom = await self._lookup(uuid)
        return absent(uuid) if dom is None else await self._view(dom, uuid)

    async def inventory(self) -> list[DomainView]:
        conn = self._need()
        return await self._call("the domain list", _list_views, conn)

    # -- operations -------------------------------------------------------
    async def define(self, xml: str) -> DomainView:
        """Define or redefine; a running domain keeps running (new XML next start)."""
        uuid = parse_domain_xml(xml)
        conn = self._need()
        async with self._lock(uuid):
            dom = await self._call(f"defining domain {uuid}", conn.defineXML, xml)
            return await self._view(dom, uuid)

    async def start(self, uuid: str) -> DomainView:
        """Make it run: no-op when running, resume when paused, restart when crashed."""
        return await self._act(uuid, "start", self._do_start)

    async def _do_start(self, dom: libvirt.virDomain, view: DomainView) -> None:
        if view.state == "running":
            return
        if view.state == "paused":
            await self._call(view.uuid, dom.resume)
            return
        if view.state == "pmsuspended":
            await self._call(view.uuid, dom.pMWakeup, 0)
            return
        if view.state == "crashed":  # preserved after a panic: destroy, then boot
            await self._call(view.uuid, dom.destroy)
        await self._call(f"starting domain {view.uuid}", dom.create)

    async def destroy(self, uuid: str) -> DomainView:
        """Power it off hard; no-op when absent or shut off."""
        return await self._act(uuid, "destroy", self._do_destroy, missing_ok=True)

    async def _do_destroy(self, dom: libvirt.virDomain, view: DomainView) -> None:
        if view.state != "shutoff":
            await self._call(f"destroying domain {view.uuid}", dom.destroy)

    async def shutdown(self, uuid: str) -> DomainView:
        """Ask the guest to shut down (ACPI); no-op when shut off."""
        async def do(dom: libvirt.virDomain, view: DomainView) -> None:
            if view.state != "shutoff":
                self._running_or_conflict(view, "shutdown")
                await self._call(f"shutting down domain {view.uuid}", dom.shutdown)
        return await self._act(uuid, "shutdown", do)

    async def reset(self, uuid: str) -> DomainView:
        """Hard reset (the reset button); the domain must be running."""
        async def do(dom: libvirt.virDomain, view: DomainView) -> None:
            self._running_or_conflict(view, "reset")
            await self._call(f"resetting domain {view.uuid}", dom.reset, 0)
        return await self._act(uuid, "reset", do)

    async def reboot(self, uuid: str) -> DomainView:
        """Ask the guest to reboot: through its guest agent (guest-shutdown
        mode reboot), else by ACPI; the domain must be running."""
        async def do(dom: libvirt.virDomain, view: DomainView) -> None:
            self._running_or_conflict(view, "reboot")
            what = f"rebooting domain {view.uuid}"
            try:
                await self._call(what, dom.reboot, libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT)
            except VmhaError as exc:
                log.info("domain %s: guest agent reboot failed (%s); trying ACPI", view.name,
                         exc.detail)
                await self._call(what, dom.reboot, libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        return await self._act(uuid, "reboot", do)

    async def inject_nmi(self, uuid: str) -> DomainView:
        """Send an NMI (a guest with unknown_nmi_panic=1 panics)."""
        async def do(dom: libvirt.virDomain, view: DomainView) -> None:
            self._running_or_conflict(view, "inject-nmi")
            await self._call(f"injecting an NMI into domain {view.uuid}", dom.injectNMI, 0)
        return await self._act(uuid, "inject-nmi", do)

    async def undefine(self, uuid: str) -> DomainView:
        """Destroy if running, then remove the definition; no-op when absent."""
        async def do(dom: libvirt.virDomain, view: DomainView) -> None:
            await self._do_destroy(dom, view)
            flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                     | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                     | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            with contextlib.suppress(NotFound):  # a transient domain vanished on destroy
                await self._call(f"undefining domain {view.uuid}", dom.undefineFlags, flags)
        return await self._act(uuid, "undefine", do, missing_ok=True)

    async def act(self, uuid: str, action: str) -> DomainView:
        """One of ACTIONS by name (the HTTP API's entry)."""
        ops = {"start": self.start, "destroy": self.destroy, "reset": self.reset,
               "reboot": self.reboot, "shutdown": self.shutdown, "undefine": self.undefine,
               "inject-nmi": self.inject_nmi}
        if action not in ops:
            raise ValidationError("action", f"{action!r} is not one of {', '.join(ACTIONS)}")
        return await ops[action](uuid)

    async def stop_all(self) -> None:
        """The isolation hook `stop-vms`: destroy every domain that is not shut off."""
        views = await self.inventory()
        for view in views:
            if view.state != "shutoff":
                log.error("isolation: destroying domain %s (%s, %s)",
                          view.name, view.uuid, view.state)
                dom = await self._lookup(view.uuid)
                if dom is not None:
                    await self._do_destroy(dom, view)

    @staticmethod
    def _running_or_conflict(view: DomainView, action: str) -> None:
        if view.state != "running":
            raise Conflict(f"cannot {action} domain {view.name} ({view.uuid}): it is "
                           f"{view.state} ({view.reason}); start it first")

    async def _act(self, uuid: str, action: str,
                   do: Callable[[libvirt.virDomain, DomainView], Any],
                   missing_ok: bool = False) -> DomainView:
        uuid = canonical_uuid(uuid)
        async with self._lock(uuid):
            dom = await self._lookup(uuid)
            if dom is None:
                if missing_ok:
                    return absent(uuid)
                raise NotFound("domain", uuid)
            self._request(uuid, action)  # before the call: its events may come first
            await do(dom, await self._view(dom, uuid))
            return await self._view(dom, uuid)

    # -- events (on the loop thread) -----------------------------------------
    def _emit(self, dom: libvirt.virDomain, kind: str, detail: str) -> None:
        uuid = dom.UUIDString()
        self._on_event(DomainEvent(uuid, dom.name(), kind, detail,
                                   self._explained(uuid, kind), time.time()))

    def _explained(self, uuid: str, kind: str) -> bool:
        action, at = self._requests.get(uuid, ("", 0.0))
        if not action:
            return False
        if time.monotonic() - at > self._window:
            del self._requests[uuid]
            return False
        if kind in _EXPLAINS[action]:
            return True
        if kind in ("started", "stopped"):  # something else happened since the request
            del self._requests[uuid]
        return False

    def _lifecycle(self, _c: Any, dom: libvirt.virDomain, event: int, detail: int,
                   _o: Any) -> None:
        kind, details = _LIFECYCLE.get(event, (None, ()))
        if kind is None:
            return
        uuid = dom.UUIDString()
        if kind == "resumed":
            if uuid not in self._paused:  # libvirt resumes every domain it boots
                return
            self._paused.discard(uuid)
        elif kind == "paused":
            self._paused.add(uuid)
        elif kind == "stopped":
            self._paused.discard(uuid)
        self._emit(dom, kind, _name(details, detail))

    def _reboot(self, _c: Any, dom: libvirt.virDomain, _o: Any) -> None:
        self._emit(dom, "rebooted", "")

    def _watchdog(self, _c: Any, dom: libvirt.virDomain, action: int, _o: Any) -> None:
        self._emit(dom, "watchdog", _name(_WATCHDOG, action))

    def _agent(self, _c: Any, dom: libvirt.virDomain, state: int, reason: int,
               _o: Any) -> None:
        kind = "agent_connected" if state == 1 else "agent_disconnected"
        self._emit(dom, kind, _name(("unknown", "domain_started", "channel"), reason))


def _list_views(conn: libvirt.virConnect) -> list[DomainView]:
    """Every domain's view, in one worker-thread call (a domain may vanish meanwhile)."""
    views = []
    for dom in conn.listAllDomains(0):
        try:
            state, reason = dom.state()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue
            raise
        views.append(view_of(dom.UUIDString(), dom.name(), state, reason))
    return sorted(views, key=lambda v: v.name)


def _reconnect_delay(failures: int) -> float:
    """The wait before the next connection attempt after `failures` failed ones."""
    return backoff.delay_s(failures, RECONNECT_MIN_S, RECONNECT_MAX_S, RECONNECT_JITTER,
                           random.random())
