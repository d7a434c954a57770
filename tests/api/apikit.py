"""Helpers of the API tests (importable by name, unlike conftest): the
tokens of every role, a clock that stands still, settings with them, and
a real engine running in a thread behind an inbox."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from vmha.adapters.cloud.fake import FakeCloud
from vmha.adapters.peer.fake import FakePeerProber
from vmha.adapters.system import SequentialIds
from vmha.config import Settings
from vmha.controller.inbox import Inbox
from vmha.engine import ControllerSettings, Engine
from vmha.ports import Store

TOKENS = {
    "admin": "tok-admin",
    "operator": "tok-operator",
    "viewer": "tok-viewer",
    "project:p1": "tok-p1",
    "project:p2": "tok-p2",
    "agent": "tok-agent",
}


class StepClock:
    """A clock that stands still unless a test moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def make_settings(**api: object) -> Settings:
    tokens = [{"token": secret, "role": role, "name": f"{role}-token"}
              for role, secret in TOKENS.items()]
    return Settings.model_validate({"api": {"tokens": tokens, **api}})


class EngineClock:
    """The engine's view of a StepClock: the same `now`, real sleeps (its
    loops must not move the test's time)."""

    def __init__(self, clock: StepClock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@contextlib.contextmanager
def running_engine(store: Store, clock: StepClock) -> Iterator[Inbox]:
    """A real Engine (fake cloud, no fencers, no peers) on its own event loop
    in a thread, behind an Inbox: what `vmha serve` runs beside the API, for
    the routes that send it commands (maintenance, fencing, actions)."""
    with engine_thread(store, clock) as (_, _, inbox):
        yield inbox


@contextlib.contextmanager
def engine_thread(store: Store, clock: StepClock,
                  ) -> Iterator[tuple[Engine, asyncio.AbstractEventLoop, Inbox]]:
    """`running_engine`, also giving the engine and its loop."""
    inbox = Inbox()
    engine = Engine(ControllerSettings(), store, EngineClock(clock), SequentialIds("job"), {},
                    FakeCloud(), FakePeerProber(), inbox=inbox)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def serve() -> None:
        await engine.start()  # jobs a test stores later are not the engine's to resume
        started.set()
        await engine.run()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),),
                              name="test-engine", daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield engine, loop, inbox
    finally:
        asyncio.run_coroutine_threadsafe(engine.stop(), loop).result(30)
        thread.join(30)
        loop.close()
