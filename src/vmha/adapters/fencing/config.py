"""Where a host's BMC is and how to log in to it: values for the fencers.

The fencing adapters (`ipmi`, `redfish`, `fence_agent`) take a lookup from
host name to these values; whoever builds the fencers (the engine's wiring,
the lab) resolves `Host.bmc` references into them. No I/O here.

The password is kept out of `repr()` so a logged endpoint never shows it.
`run_blocking` runs a blocking BMC client call (pyghmi, sushy) for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vmha.domain.errors import NotFound

T = TypeVar("T")


@dataclass(frozen=True)
class BmcEndpoint:
    """One BMC: `address` (IP or name; for Redfish a base URL like
    `https://10.0.0.5:8443`), `port` (IPMI UDP port, 0 = the protocol's
    default), credentials, and for Redfish the system path
    (`/redfish/v1/Systems/<id>`; empty = the only system)."""

    address: str
    username: str
    password: str = field(repr=False)
    port: int = 0
    system: str = ""

    def __str__(self) -> str:
        where = f"{self.address}:{self.port}" if self.port else self.address
        return f"{self.username}@{where}"


# A host's BMC. It may block (the controller's reads the store first,
# vmha.controller.fencers): the fencers call it in a thread of their own,
# never on the event loop, as they do the BMC's session.
BmcLookup = Callable[[str], BmcEndpoint]


def static_lookup(endpoints: Mapping[str, BmcEndpoint]) -> BmcLookup:
    """A lookup over a fixed mapping; NotFound for a host without a BMC."""

    def lookup(host: str) -> BmcEndpoint:
        try:
            return endpoints[host]
        except KeyError:
            raise NotFound("BMC of host", host) from None

    return lookup


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking `fn` in a daemon thread. Unlike `asyncio.to_thread`, a
    call abandoned on timeout does not hold up the event loop's shutdown."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # abandoned after a timeout
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="vmha-fence", daemon=True).start()
    return await future
