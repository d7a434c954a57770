"""The API's host reads from the leading engine's cache (issue 18).

`GET /v1/hosts` and `GET /v1/hosts/{name}` are answered from the engine's
host index (vmha.engine.hostindex): a page costs O(log N + page size),
neither a store query nor a loop over every host, in the API's worker
thread. What a page shows is the engine's view: a state change is listed
as soon as the engine makes it (its write to the store follows within
milliseconds, vmha.engine.state's write-behind).

Read-your-writes: the API's own host writes (create, change, delete,
agent registration) are handed to the engine's loop (`written`) before the
request answers, so the next page shows them. A host written to the store
by other means (another program on the database) shows after the engine's
next catch-up (`[controller] store_refresh_s`).

From the store instead (`page`/`get` answer None): when this controller
does not lead (a follower's engine is idle and its cache empty: reads are
served from the store, as every read of a follower is), and when the
leading engine has not read its hosts yet (just elected or starting).
Validation and errors are the store's (vmha.adapters.store.query): the
same query is refused with the same words either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence

from vmha.adapters.store.query import HOSTS, plan
from vmha.domain.model import Host
from vmha.engine.state import Cluster
from vmha.ports import ListQuery, Page, Store

log = logging.getLogger("vmha.api.hosts")
LEARN_WAIT_S = 5.0  # an API host write waits this long for the engine's loop to take it


class EngineHostView:
    """Host pages from `cluster()` (the leading engine's, or None)."""

    def __init__(self, store: Store, cluster: Callable[[], Cluster | None]) -> None:
        self.store = store
        self._cluster = cluster
        self.loop: asyncio.AbstractEventLoop | None = None  # the engine's (bound at start)

    def _ready(self) -> Cluster | None:
        cluster = self._cluster()
        return cluster if cluster is not None and cluster.index.ready else None

    def page(self, query: ListQuery) -> Page[Host] | None:
        """A page of hosts as the store would list it, or None: ask the store."""
        cluster = self._ready()
        if cluster is None:
            return None
        p = plan(HOSTS, query)
        items, next_marker = cluster.index.page(
            p.sort, p.desc, p.limit, p.marker, p.filters.get("segment"), p.filters.get("state"))
        return Page(items, next_marker)

    def get(self, name: str) -> Host | None:
        """The engine's copy of host `name`, or None: ask the store."""
        cluster = self._ready()
        return None if cluster is None else cluster.index.get(name)

    def written(self, names: Sequence[str]) -> None:
        """The API wrote hosts `names`: read them from the store and merge
        them into the engine's cache on its loop (a name the store no longer
        has is dropped); returns once merged, or after LEARN_WAIT_S."""
        loop = self.loop
        if self._ready() is None or loop is None or not names:
            return
        stored = self.store.get_hosts(names)
        gone = sorted(set(names) - {h.name for h in stored})

        def merge() -> None:
            cluster = self._ready()  # the engine may have changed meanwhile
            if cluster is not None:
                cluster.learn(stored, gone)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            merge()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                merge()
                done.set_result(None)
            except Exception as exc:  # handed to the waiting request
                done.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
            done.result(LEARN_WAIT_S)
        except RuntimeError:  # the loop closed: the controller stops
            return
        except concurrent.futures.TimeoutError:
            log.warning("hosts %s written; the engine's loop did not take them within %.0f s: "
                        "host pages show them after its next catch-up", ", ".join(names[:5]),
                        LEARN_WAIT_S)
