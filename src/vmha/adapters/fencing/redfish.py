"""Redfish power fencing with sushy: the `redfish` Fencer.

Built by whoever wires fencers, with a lookup from host name to
`BmcEndpoint` (address = base URL such as `https://10.0.0.5:443`, system =
`/redfish/v1/Systems/<id>` or empty for a BMC with one system). sushy is
blocking: each call runs in a worker thread bounded by `timeout_s`.

TLS: certificates are verified by default against the system CAs or
`ca_bundle`; `verify=False` is allowed for labs and logs a loud warning at
construction. Auth: HTTP basic (default) or a Redfish session ("session",
falling back to basic); clients are kept per endpoint so sessions are
reused rather than piling up on the BMC.

Errors: unreachable / timeout / TLS failure / other BMC errors ->
TemporaryError; HTTP 401/403 -> Unauthenticated. Messages and logs name the
host and the BMC URL, never the password. It decides nothing: confirmation
is the caller's `power_status` read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import sushy
from sushy import auth as sushy_auth
from sushy import exceptions as sushy_exc

from vmha.adapters.fencing.config import BmcEndpoint, BmcLookup, run_blocking
from vmha.domain.errors import TemporaryError, Unauthenticated
from vmha.domain.model import Host
from vmha.ports import PowerState

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 10.0
_STATES = {sushy.PowerState.ON: PowerState.ON, sushy.PowerState.OFF: PowerState.OFF}


class RedfishFencer:
    """Fencer over Redfish `ComputerSystem.Reset`; `lookup(host.name)` gives the BMC."""

    method = "redfish"

    def __init__(
        self,
        lookup: BmcLookup,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verify: bool = True,
        ca_bundle: str | None = None,
        auth: Literal["basic", "session"] = "basic",
    ) -> None:
        self._lookup = lookup
        self.timeout_s = timeout_s
        # requests takes either a bool or a CA bundle path.
        self._verify: bool | str = ca_bundle if (verify and ca_bundle) else verify
        self._auth = auth
        self._clients: dict[BmcEndpoint, Any] = {}
        self._lock = threading.Lock()
        if not verify:
            log.warning(
                "redfish: TLS certificate verification is OFF: anyone on the management "
                "network can impersonate a BMC and fake a fence; set a CA bundle instead"
            )

    async def power_status(self, host: Host) -> PowerState:
        state = await self._call(host, "status", lambda s: s.power_state)
        return _STATES.get(state, PowerState.UNKNOWN)

    async def power_off(self, host: Host) -> None:
        await self._call(host, "off", lambda s: s.reset_system(sushy.ResetType.FORCE_OFF))
        log.info("redfish: ForceOff accepted for host %s", host.name)

    async def power_on(self, host: Host) -> None:
        await self._call(host, "on", lambda s: s.reset_system(sushy.ResetType.ON))
        log.info("redfish: On accepted for host %s", host.name)

    async def _call(self, host: Host, op: str, action: Callable[[Any], T]) -> T:
        endpoint = await run_blocking(self._lookup, host.name)
        where = endpoint.address + (endpoint.system or "")
        try:
            work = run_blocking(self._on_system, endpoint, action)
            return await asyncio.wait_for(work, self.timeout_s)
        except TimeoutError:
            raise TemporaryError(
                f"redfish {op} on host {host.name}: BMC {where} did not answer within "
                f"{self.timeout_s:g} s; check that the BMC is up and reachable"
            ) from None
        except sushy_exc.AccessError as exc:
            raise Unauthenticated(
                f"redfish {op} on host {host.name}: BMC {where} refused user "
                f"{endpoint.username!r} (HTTP {exc.status_code}); check the BMC username "
                "and password in the host's BMC settings"
            ) from exc
        except sushy_exc.SushyError as exc:
            self._forget(endpoint)
            raise TemporaryError(
                f"redfish {op} on host {host.name}: BMC {where} failed: {_reason(exc)}"
            ) from exc

    def _on_system(self, endpoint: BmcEndpoint, action: Callable[[Any], T]) -> T:
        """Blocking: fetch the system fresh and apply `action` to it."""
        client = self._client(endpoint)
        system = client.get_system(endpoint.system or None)
        return action(system)

    def _client(self, endpoint: BmcEndpoint) -> Any:
        with self._lock:
            client = self._clients.get(endpoint)
        if client is not None:
            return client
        authn = (
            sushy_auth.SessionOrBasicAuth(endpoint.username, endpoint.password)
            if self._auth == "session"
            else sushy_auth.BasicAuth(endpoint.username, endpoint.password)
        )
        # Few retries: the caller's timeout bounds the call, and the
        # engine's fence levels decide about trying again.
        client = sushy.Sushy(
            endpoint.address,
            verify=self._verify,
            auth=authn,
            server_side_retries=1,
            server_side_retries_delay=0.1,
            read_timeout=self.timeout_s,
            connect_timeout=self.timeout_s,
        )
        with self._lock:
            return self._clients.setdefault(endpoint, client)

    def _forget(self, endpoint: BmcEndpoint) -> None:
        with self._lock:
            self._clients.pop(endpoint, None)


def _reason(exc: sushy_exc.SushyError) -> str:
    """sushy's message, which names the URL and the underlying error."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."
