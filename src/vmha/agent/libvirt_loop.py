"""libvirt's event loop on the agent's asyncio loop, safe from any thread.

libvirt needs an event implementation before a connection is opened: it
watches file descriptors and runs timers through it, and delivers domain
events (lifecycle, watchdog, reboot, guest agent) from a timer callback.
`bind_event_loop()` registers this one once per process and binds it to
the running asyncio loop.

Why not `libvirtaio.virEventRegisterAsyncIOImpl()`: libvirt arms its
event-dispatch timer from whichever thread queued the event (a QEMU
monitor thread for a crash, our executor thread for an API call), and
libvirtaio touches the asyncio loop from that thread without waking it, so
an event waits until something else wakes the loop; measured: a pause
event arrived 3 s late with an idle loop. Here every change is recorded
under a lock and applied on the loop thread through
`call_soon_threadsafe`, which wakes the loop: events leave in
milliseconds.

Used by `vmha.agent.hypervisor`. It never opens a connection itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import libvirt

log = logging.getLogger(__name__)

_READ = libvirt.VIR_EVENT_HANDLE_READABLE
_WRITE = libvirt.VIR_EVENT_HANDLE_WRITABLE


@dataclass
class _Handle:
    fd: int
    events: int
    cb: Any
    opaque: Any


@dataclass
class _Timer:
    interval_ms: int  # -1: disabled; 0: as soon as possible, repeatedly
    cb: Any
    opaque: Any
    gen: int = 0
    pending: asyncio.TimerHandle | asyncio.Handle | None = field(default=None, repr=False)


class LoopEvents:
    """The registered implementation: desired state under a lock, applied
    on the loop thread (so the order of calls from threads does not matter)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._handles: dict[int, _Handle] = {}
        self._timers: dict[int, _Timer] = {}
        self._watched: dict[int, int] = {}  # fd -> events registered with the loop

    # -- binding ----------------------------------------------------------
    def rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move every watch and timer to `loop` (the old loop has ended)."""
        if loop is self._loop:
            return
        if self._loop.is_running():
            raise RuntimeError("libvirt's events are bound to another running asyncio loop; "
                               "run one loop per process")
        self._loop = loop
        self._watched.clear()
        with self._lock:
            fds = {h.fd for h in self._handles.values()}
            timers = list(self._timers)
        for timer in timers:
            self._soon(self._sync_timer, timer)
        for fd in fds:
            self._soon(self._sync_fd, fd)

    def _soon(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: `rebind` re-applies later
            self._loop.call_soon_threadsafe(fn, *args)

    # -- handles (file descriptors) ----------------------------------------
    def add_handle(self, fd: int, events: int, cb: Any, opaque: Any) -> int:
        ident = next(self._ids)
        with self._lock:
            self._handles[ident] = _Handle(fd, events, cb, opaque)
        self._soon(self._sync_fd, fd)
        return ident

    def update_handle(self, ident: int, events: int) -> None:
        with self._lock:
            handle = self._handles.get(ident)
            if handle is None:
                return
            handle.events = events
        self._soon(self._sync_fd, handle.fd)

    def remove_handle(self, ident: int) -> int:
        with self._lock:
            handle = self._handles.pop(ident, None)
        if handle is None:
            return -1
        self._soon(self._sync_fd, handle.fd)
        self._soon(libvirt.virEventInvokeFreeCallback, handle.opaque)
        return 0

    def _sync_fd(self, fd: int) -> None:
        with self._lock:
            want = 0
            for handle in self._handles.values():
                if handle.fd == fd:
                    want |= handle.events & (_READ | _WRITE)
        have = self._watched.get(fd, 0)
        if want & _READ and not have & _READ:
            self._loop.add_reader(fd, self._dispatch_fd, fd, _READ)
        elif have & _READ and not want & _READ:
            self._loop.remove_reader(fd)
        if want & _WRITE and not have & _WRITE:
            self._loop.add_writer(fd, self._dispatch_fd, fd, _WRITE)
        elif have & _WRITE and not want & _WRITE:
            self._loop.remove_writer(fd)
        if want:
            self._watched[fd] = want
        else:
            self._watched.pop(fd, None)

    def _dispatch_fd(self, fd: int, event: int) -> None:
        with self._lock:
            due = [(i, h) for i, h in self._handles.items() if h.fd == fd and h.events & event]
        for ident, handle in due:
            try:
                handle.cb(ident, fd, event, handle.opaque)
            except Exception:
                log.exception("libvirt handle callback %d on fd %d failed", ident, fd)

    # -- timers -----------------------------------------------------------
    def add_timeout(self, interval_ms: int, cb: Any, opaque: Any) -> int:
        ident = next(self._ids)
        with self._lock:
            self._timers[ident] = _Timer(interval_ms, cb, opaque)
        self._soon(self._sync_timer, ident)
        return ident

    def update_timeout(self, ident: int, interval_ms: int) -> None:
        with self._lock:
            timer = self._timers.get(ident)
            if timer is None:
                return
            timer.interval_ms = interval_ms
        self._soon(self._sync_timer, ident)

    def remove_timeout(self, ident: int) -> int:
        with self._lock:
            timer = self._timers.pop(ident, None)
        if timer is None:
            return -1
        self._soon(self._cancel, timer)
        self._soon(libvirt.virEventInvokeFreeCallback, timer.opaque)
        return 0

    @staticmethod
    def _cancel(timer: _Timer) -> None:
        if timer.pending is not None:
            timer.pending.cancel()
            timer.pending = None

    def _sync_timer(self, ident: int) -> None:
        with self._lock:
            timer = self._timers.get(ident)
            if timer is None:
                return
            interval = timer.interval_ms
            timer.gen += 1
            gen = timer.gen
        self._cancel(timer)
        if interval >= 0:
            timer.pending = self._loop.call_later(interval / 1000, self._fire, ident, gen)

    def _fire(self, ident: int, gen: int) -> None:
        with self._lock:
            timer = self._timers.get(ident)
            if timer is None or timer.gen != gen:
                return
            timer.pending = None
        try:
            timer.cb(ident, timer.opaque)
        except Exception:
            log.exception("libvirt timer callback %d failed", ident)
        with self._lock:
            again = self._timers.get(ident) is timer and timer.gen == gen
        if again:  # periodic until libvirt disables or changes it
            self._sync_timer(ident)


_registered: LoopEvents | None = None
_register_lock = threading.Lock()


def bind_event_loop() -> LoopEvents:
    """Register (once per process) and bind libvirt's events to the running loop.

    Call from a coroutine before opening a connection. A later call from a
    new loop (after the first one ended, as in tests) moves the watches.
    """
    global _registered
    loop = asyncio.get_running_loop()
    with _register_lock:
        if _registered is None:
            impl = LoopEvents(loop)
            libvirt.virEventRegisterImpl(impl.add_handle, impl.update_handle, impl.remove_handle,
                                         impl.add_timeout, impl.update_timeout,
                                         impl.remove_timeout)
            _registered = impl
        else:
            _registered.rebind(loop)
        return _registered
