"""The store awaited: blocking calls run in a thread pool, off the event loop.

The engine's detector loop shares its event loop with the heartbeat intake's
hand-over, the API and the confirmation rounds: a database call made on it
stalls all of them for as long as the database takes (issue 13: with 200 ms
per store call, no heartbeat may reach the detector late; a mass silence of
10,000 hosts written one host per call held the loop for ~18 s). The engine
reads and writes through the small Protocols of `AsyncStore` (vmha.ports:
inventory, host writes, events, jobs, instances, agents);
`async_view(store)` gives it one:

- `ThreadedStore` for a store whose calls block (SqlStore, and anything not
  saying otherwise): each call runs in this module's pool of threads
  (POOL_THREADS; SqlStore is thread-safe, the API's routes call it from
  threads too) and the caller awaits it while the loop runs on;
- `InlineStore` for a store whose class says `blocking = False` (FakeStore:
  in memory, and it must stay on the simulator's virtual loop, where a
  thread would run in real time): called directly, so a run stays
  deterministic; `inline` tells callers that awaiting it costs no time.

Both are `_Awaited`: every call is written once, and only how a call is
made (`_run`) differs.

Why not `asyncio.to_thread`: the loop's default executor is shared with
everything else in the process (the API's thread pool routes, DNS); a slow
database would then queue behind those, and they behind it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from vmha.domain.model import Event, Host, Instance, Job, Segment
from vmha.ports import AsyncStore, EventQuery, ListQuery, NamedPolicy, Page, Store

T = TypeVar("T")
POOL_THREADS = 4  # the engine's reads and writes in flight at once

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="vmha-store")
        return _pool


def async_view(store: Store) -> AsyncStore:
    """`store` awaited: in line when its class says it never blocks, else
    through the thread pool."""
    if getattr(store, "blocking", True) is False:
        return InlineStore(store)
    return ThreadedStore(store)


class _Awaited:
    """Every awaited call of `AsyncStore`, made through `_run`."""

    inline = False

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    # inventory
    async def list_segments(self, query: ListQuery) -> Page[Segment]:
        return await self._run(self.store.list_segments, query)

    async def create_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment:
        return await self._run(self.store.create_segment, segment, events)

    async def host_versions(self) -> dict[str, int]:
        return await self._run(self.store.host_versions)

    async def get_hosts(self, names: Sequence[str]) -> list[Host]:
        return await self._run(self.store.get_hosts, names)

    async def create_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        return await self._run(self.store.create_host, host, events)

    # agents
    async def agent_hosts(self) -> frozenset[str]:
        return await self._run(self.store.agent_hosts)

    async def agent_marks(self) -> dict[str, int]:
        return await self._run(self.store.agent_marks)

    # host writes
    async def update_hosts(
        self, changes: Sequence[tuple[Host, Sequence[Event]]]
    ) -> list[Host | None]:
        return await self._run(self.store.update_hosts, changes)

    async def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        return await self._run(self.store.update_host, host, events)

    async def get_host(self, name: str) -> Host:
        return await self._run(self.store.get_host, name)

    # events
    async def append_events(self, events: Sequence[Event]) -> list[Event]:
        return await self._run(self.store.append_events, events)

    async def list_events(self, query: EventQuery) -> list[Event]:
        return await self._run(self.store.list_events, query)

    # jobs
    async def create_job(self, job: Job, events: Sequence[Event] = ()) -> Job:
        return await self._run(self.store.create_job, job, events)

    async def get_job(self, job_id: str) -> Job:
        return await self._run(self.store.get_job, job_id)

    async def list_jobs(self, query: ListQuery) -> Page[Job]:
        return await self._run(self.store.list_jobs, query)

    async def save_job(
        self, job: Job, expected_generation: int, events: Sequence[Event] = ()
    ) -> Job:
        return await self._run(self.store.save_job, job, expected_generation, events)

    # instances and policies
    async def create_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        return await self._run(self.store.create_instance, instance, events)

    async def get_instance(self, instance_id: str) -> Instance:
        return await self._run(self.store.get_instance, instance_id)

    async def list_instances(self, query: ListQuery) -> Page[Instance]:
        return await self._run(self.store.list_instances, query)

    async def update_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        return await self._run(self.store.update_instance, instance, events)

    async def delete_instance(self, instance_id: str, events: Sequence[Event] = ()) -> None:
        return await self._run(self.store.delete_instance, instance_id, events)

    async def get_policy(self, name: str) -> NamedPolicy:
        return await self._run(self.store.get_policy, name)


class ThreadedStore(_Awaited):
    """A blocking store's calls, each run in the pool's threads."""

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(_executor(), call, *args)


class InlineStore(_Awaited):
    """A store that never blocks, called directly (see the module doc): the
    awaits complete without giving the loop a turn, so the simulator's
    runs keep their order."""

    inline = True

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        return call(*args)
