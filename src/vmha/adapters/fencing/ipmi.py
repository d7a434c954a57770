"""IPMI 2.0 (lanplus) power fencing with pyghmi: the `ipmi` Fencer.

Built by whoever wires fencers (engine wiring, lab, benchmarks) with a
lookup from host name to `BmcEndpoint`. pyghmi's client is blocking: each
call logs in, does one thing and logs out in a worker thread, bounded by
`timeout_s`. Cipher suite: pyghmi proposes SHA-256 (suite 17) first and
falls back to SHA-1 (suite 3) when the BMC refuses; the lab emulator
refuses suite 17 for that reason (LAB-NOTES).

Errors: unreachable / no answer within `timeout_s` / a BMC error reply ->
TemporaryError; wrong user or password -> Unauthenticated. Messages and
logs name the host and BMC address, never the password. It must not decide
anything: confirmation is the caller's `power_status` read.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as ipmisession

from vmha.adapters.fencing.config import BmcEndpoint, BmcLookup, run_blocking
from vmha.domain.errors import TemporaryError, Unauthenticated
from vmha.domain.model import Host
from vmha.ports import PowerState

log = logging.getLogger(__name__)

T = TypeVar("T")
IPMI_PORT = 623
DEFAULT_TIMEOUT_S = 5.0
# Texts of pyghmi's login failures that mean "bad credentials".
_AUTH_FAILURES = ("password", "unauthorized name", "unauthorized role")


class IpmiFencer:
    """Fencer over IPMI 2.0 lanplus; `lookup(host.name)` gives the BMC."""

    method = "ipmi"

    def __init__(self, lookup: BmcLookup, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._lookup = lookup
        self.timeout_s = timeout_s

    async def power_status(self, host: Host) -> PowerState:
        reply = await self._call(host, "status", lambda c: c.get_power())
        state = reply.get("powerstate")
        if state == "on":
            return PowerState.ON
        if state == "off":
            return PowerState.OFF
        return PowerState.UNKNOWN

    async def power_off(self, host: Host) -> None:
        # wait=False: return once accepted; confirmation is a status read.
        await self._call(host, "off", lambda c: c.set_power("off", wait=False))
        log.info("ipmi: power off accepted for host %s", host.name)

    async def power_on(self, host: Host) -> None:
        await self._call(host, "on", lambda c: c.set_power("on", wait=False))
        log.info("ipmi: power on accepted for host %s", host.name)

    async def power_cycle(self, host: Host) -> None:
        await self._call(host, "cycle", lambda c: c.set_power("boot", wait=False))
        log.info("ipmi: power cycle accepted for host %s", host.name)

    async def _call(self, host: Host, op: str, action: Callable[[Any], T]) -> T:
        endpoint = await run_blocking(self._lookup, host.name)
        where = f"{endpoint.address}:{endpoint.port or IPMI_PORT}"
        try:
            work = run_blocking(_with_session, endpoint, action)
            return await asyncio.wait_for(work, self.timeout_s)
        except TimeoutError:
            # The worker thread ends on pyghmi's own retry limit (~5 s).
            raise TemporaryError(
                f"ipmi {op} on host {host.name}: BMC {where} did not answer within "
                f"{self.timeout_s:g} s; check that the BMC is up and reachable"
            ) from None
        except pyghmi_exc.IpmiException as exc:
            raise _translate(exc, host.name, op, where, endpoint.username) from exc
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name DNS cannot encode
            raise TemporaryError(
                f"ipmi {op} on host {host.name}: cannot reach BMC {where}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from exc


# pyghmi shares one session per (BMC, credentials) inside a process, so two
# threads on the same BMC must take turns (one's logout ends the other's).
_BMC_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_BMC_LOCKS_GUARD = threading.Lock()


def _bmc_lock(address: str, port: int) -> threading.Lock:
    with _BMC_LOCKS_GUARD:
        return _BMC_LOCKS.setdefault((address, port), threading.Lock())


def _with_session(endpoint: BmcEndpoint, action: Callable[[Any], T]) -> T:
    """Blocking: log in, run `action(command)`, log out."""
    port = endpoint.port or IPMI_PORT
    with _bmc_lock(endpoint.address, port):
        cmd = ipmi_command.Command(
            bmc=endpoint.address, userid=endpoint.username, password=endpoint.password, port=port
        )
        try:
            return action(cmd)
        finally:
            _logout(cmd.ipmi_session)
            # pyghmi 1.6 leaves a logged-out session in its table of
            # sessions being set up and hands it to the next login, which
            # then crashes: forget it.
            key = (endpoint.address, endpoint.username, endpoint.password, port, None)
            ipmisession.Session.initting_sessions.pop(key, None)


def _logout(session: Any) -> None:
    """Close the session and wait for the BMC's answer. pyghmi's own logout
    does not wait; the answer then reaches the next session to this BMC
    (same UDP socket, same session id), which takes it for its own reply
    and stalls 0.5-1.5 s until it retransmits."""
    try:
        if session.logged:
            sid = tuple(struct.pack("I", session.sessionid))
            session.raw_command(netfn=6, command=0x3C, data=sid, retry=True)
            session.logged = 0  # closed: logout() below only cleans up
        session.logout()
    except (pyghmi_exc.IpmiException, OSError) as exc:
        # Best effort: the BMC expires idle sessions by itself.
        log.debug("ipmi: logout failed: %s", exc)


def _translate(
    exc: pyghmi_exc.IpmiException, host: str, op: str, where: str, user: str
) -> Exception:
    text = str(exc.args[0]) if exc.args and exc.args[0] else ""
    if any(word in text.lower() for word in _AUTH_FAILURES):
        return Unauthenticated(
            f"ipmi {op} on host {host}: BMC {where} refused user {user!r} ({text}); "
            "check the BMC username and password in the host's BMC settings"
        )
    if not text:
        # pyghmi reports a login without any answer as an empty exception.
        return TemporaryError(
            f"ipmi {op} on host {host}: BMC {where} did not answer; "
            "check that the BMC is up and reachable"
        )
    return TemporaryError(f"ipmi {op} on host {host}: BMC {where} failed: {text}")
