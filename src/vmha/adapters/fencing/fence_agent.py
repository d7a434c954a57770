"""Fencing through an installed ClusterLabs fence agent: the `fence_agent` Fencer.

Runs e.g. Debian's `fence_ipmilan` or `fence_redfish` (package
`fence-agents`, see scripts/ensure-fence-deps.sh) with the standard fence
agent interface: options as `key=value` lines on stdin (so the password is
never on a command line), `action=status|off|on`, and exit codes 0 = ok,
1 = failed, 2 = "status: off". Built by whoever wires fencers, with the
agent's name, a host -> `BmcEndpoint` lookup and the agent's fixed options
(e.g. `{"lanplus": "1"}`); `PerHostAgentFencer` when every host names its
own agent and options (the controller's `[bmcs.*] fence_agent`).

From the endpoint it passes `ip`, `ipport` (when set), `username`,
`password`, and for a URL address (`https://h:p`) also `ssl=1`; an endpoint
`system` becomes `systems-uri` (fence_redfish). Errors: agent missing ->
ConfigError; timeout, exit 1 or anything else -> TemporaryError carrying
the agent's last output line with the password blanked out. It must not
log or raise the password, nor decide anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vmha.adapters.fencing.config import BmcEndpoint, BmcLookup, run_blocking
from vmha.domain.errors import ConfigError, TemporaryError
from vmha.domain.model import Host
from vmha.ports import PowerState

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
EXIT_OK = 0
EXIT_STATUS_OFF = 2


class FenceAgentFencer:
    """Fencer running `agent` (a fence agent executable name or path)."""

    method = "fence_agent"

    def __init__(
        self,
        agent: str,
        lookup: BmcLookup,
        options: Mapping[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.agent = agent
        self._lookup = lookup
        self._options = dict(options or {})
        self.timeout_s = timeout_s

    async def power_status(self, host: Host) -> PowerState:
        code, output = await self._run(host, "status")
        if code == EXIT_OK:
            return PowerState.ON
        if code == EXIT_STATUS_OFF:
            return PowerState.OFF
        raise self._failed(host, "status", code, output)

    async def power_off(self, host: Host) -> None:
        await self._act(host, "off")

    async def power_on(self, host: Host) -> None:
        await self._act(host, "on")

    async def _act(self, host: Host, action: str) -> None:
        code, output = await self._run(host, action)
        if code != EXIT_OK:
            raise self._failed(host, action, code, output)
        log.info("%s: power %s done for host %s", self.agent, action, host.name)

    async def _run(self, host: Host, action: str) -> tuple[int, str]:
        """Run the agent once; (exit code, its output with the password blanked)."""
        endpoint = await run_blocking(self._lookup, host.name)
        stdin = _stdin_lines({**agent_options(endpoint), **self._options, "action": action})
        executable = shutil.which(self.agent)
        if executable is None:
            raise ConfigError(
                f"fence agent {self.agent!r} is not installed; run scripts/ensure-fence-deps.sh "
                "or install Debian's fence-agents"
            )
        proc = await asyncio.create_subprocess_exec(
            executable,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(stdin), self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise TemporaryError(
                f"{self.agent} {action} on host {host.name}: no result within "
                f"{self.timeout_s:g} s from BMC {endpoint.address}; check that it is reachable"
            ) from None
        text = out.decode("utf-8", "replace")
        if endpoint.password:
            text = text.replace(endpoint.password, "***")
        return proc.returncode if proc.returncode is not None else -1, text

    def _failed(self, host: Host, action: str, code: int, output: str) -> TemporaryError:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        # Agents print Python warnings too: prefer their own error line.
        errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
        last = (errors or lines or ["no output"])[-1]
        return TemporaryError(
            f"{self.agent} {action} on host {host.name} failed (exit {code}): {last}; "
            "check the BMC address, credentials and that the BMC is up"
        )


def agent_options(endpoint: BmcEndpoint) -> dict[str, str]:
    """The standard fence agent options describing `endpoint`."""
    opts: dict[str, str] = {"username": endpoint.username, "password": endpoint.password}
    if "://" in endpoint.address:
        url = urlsplit(endpoint.address)
        opts["ip"] = url.hostname or ""
        if url.port:
            opts["ipport"] = str(url.port)
        if url.scheme == "https":
            opts["ssl"] = "1"
    else:
        opts["ip"] = endpoint.address
        if endpoint.port:
            opts["ipport"] = str(endpoint.port)
    if endpoint.system:
        opts["systems-uri"] = endpoint.system
    return opts


def _stdin_lines(options: Mapping[str, str]) -> bytes:
    for key, value in options.items():
        if "\n" in key or "\n" in value or "=" in key:
            raise ConfigError(f"fence agent option {key!r}: no newlines or '=' in names allowed")
    return "".join(f"{k}={v}\n" for k, v in options.items()).encode("utf-8")


@dataclass(frozen=True)
class AgentTarget:
    """Which agent fences a host, against which BMC, with which options."""

    agent: str
    endpoint: BmcEndpoint
    options: Mapping[str, str] = field(default_factory=dict)


class PerHostAgentFencer:
    """The `fence_agent` method when each host names its own agent (the
    controller's `[bmcs.*] fence_agent`): `targets(host.name)` says which."""

    method = "fence_agent"

    def __init__(self, targets: Callable[[str], AgentTarget],
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._targets = targets
        self.timeout_s = timeout_s

    async def _fencer(self, host: Host) -> FenceAgentFencer:
        t = await run_blocking(self._targets, host.name)  # it may read the store
        return FenceAgentFencer(t.agent, lambda _name: t.endpoint, t.options, self.timeout_s)

    async def power_status(self, host: Host) -> PowerState:
        return await (await self._fencer(host)).power_status(host)

    async def power_off(self, host: Host) -> None:
        await (await self._fencer(host)).power_off(host)

    async def power_on(self, host: Host) -> None:
        await (await self._fencer(host)).power_on(host)
