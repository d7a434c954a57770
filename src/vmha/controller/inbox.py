"""The controller's inbox: the one door into controller state.

The API's routes, the agents' reports and the simulator `await
inbox.ask(command)` (a typed command of vmha.domain.commands) and get the
engine's answer, or the error it raised (NotFound, Conflict, ...). The
engine is the only reader: its loop takes each letter with `receive()` and
answers it (vmha.engine.core). Nothing else writes hosts' states, jobs or
instances' observed state.

Letters sent before the engine runs wait for it (it starts with the
process); once the engine stopped, `ask` fails at once with TemporaryError
(the API answers 503), and letters still queued then are refused the same
way. The queue is bounded: a flood of requests is refused (TemporaryError)
rather than piling up in memory.

Thread-safe: a letter may come from another thread or event loop than the
engine's (a test client, a thread-pool route); the answer is a
`concurrent.futures.Future` that `ask` awaits in the caller's own loop.
In `vmha serve` the API and the engine share one loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from vmha.domain.commands import Command
from vmha.domain.errors import TemporaryError

QUEUE_MAX = 10_000
NOT_RUNNING = "the controller's engine is not running in this process"


@dataclass
class Letter:
    """One command on its way to the engine, and where its answer goes."""

    command: Command
    reply: concurrent.futures.Future[Any] = field(
        default_factory=concurrent.futures.Future, repr=False)

    def answer(self, result: object) -> None:
        if not self.reply.done():
            self.reply.set_result(result)

    def refuse(self, error: BaseException) -> None:
        if not self.reply.done():
            self.reply.set_exception(error)


class Inbox:
    """Commands in, answers out; see the module docstring."""

    def __init__(self, limit: int = QUEUE_MAX) -> None:
        self._limit = limit
        self._letters: deque[Letter] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._reader: asyncio.AbstractEventLoop | None = None  # the engine's loop
        self._wake: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """The engine stopped: refuse every letter still queued, and any later."""
        with self._lock:
            self._closed = True
            left, self._letters = list(self._letters), deque()
        for letter in left:
            letter.refuse(TemporaryError(NOT_RUNNING, 5.0))

    async def ask(self, command: Command) -> Any:
        """Hand `command` to the engine and wait for its answer."""
        return await asyncio.wrap_future(self.post(command))

    def post(self, command: Command) -> concurrent.futures.Future[Any]:
        """Queue `command`; the future gets the engine's answer."""
        letter = Letter(command)
        with self._lock:
            if self._closed:
                raise TemporaryError(NOT_RUNNING, 5.0)
            if len(self._letters) >= self._limit:
                raise TemporaryError(f"the controller has {len(self._letters)} requests "
                                     "waiting; try again in a moment", 1.0)
            self._letters.append(letter)
            reader, wake = self._reader, self._wake
        if reader is not None and wake is not None and not reader.is_closed():
            reader.call_soon_threadsafe(wake.set)
        return letter.reply

    async def receive(self) -> Letter:
        """The next letter (the engine's loop only)."""
        with self._lock:
            if self._wake is None:
                self._wake = asyncio.Event()
                self._reader = asyncio.get_running_loop()
            wake = self._wake
        while True:
            with self._lock:
                if self._letters:
                    return self._letters.popleft()
                wake.clear()
            await wake.wait()
