"""An asyncio event loop whose clock is virtual.

When nothing is ready to run, the loop jumps its clock straight to the next
scheduled timer instead of waiting, so `await asyncio.sleep(30)` costs no
wall time and a run is repeatable: with the same inputs, callbacks run in
the same order at the same virtual times. Real I/O must not be used on it
(the selector never reports readiness).

`run_virtual(main, start=0.0)` runs a coroutine on a fresh virtual loop and
returns its result; `VirtualClock` is the `Clock` port reading that loop.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _TimeJumpSelector(selectors.DefaultSelector):
    """A selector that never waits: a timeout advances the virtual clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._vloop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)  # only the loop's own self-pipe lives here
        if not events and timeout is not None and timeout > 0:
            self._vloop.advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(selector=_TimeJumpSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


class VirtualClock:
    """The `Clock` port on a virtual loop (also right on a real loop whose
    `time()` is the epoch-free monotonic clock: it reads `loop.time()`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def run_virtual(main: Coroutine[Any, Any, T], start: float = 0.0) -> T:
    """Run `main` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
