"""What every request handler needs, kept on `app.state.vmha` (no globals).

`create_app` builds one `AppContext`; routes get it through the `context`
dependency. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request

from vmha.adapters.fencing.secrets import SecretBox
from vmha.api.auth import TokenTable
from vmha.config import Settings
from vmha.domain.model import Job
from vmha.errors import NotFound, ValidationError
from vmha.ports import Clock, IdGen, Store


@dataclass(frozen=True)
class Liveness:
    """What the running detector knows of one host's heartbeats."""

    heartbeat_age_s: float | None  # None: never heard since the controller started
    phi: float


class HostOperations(Protocol):
    """What the running controller offers operators (vmha.cli.service)."""

    async def power_status(self, host: str) -> dict[str, str]:
        """Each configured power method's reading: "on", "off" or "error: …"."""
        ...

    async def fence_ack(self, host: str, who: str, force: bool = False) -> None: ...

    async def fence_host(self, host: str, who: str, method: str | None) -> Job:
        """Start an operator's fence of `host` (its recovery job)."""
        ...

    async def set_scheduling(self, host: str, enabled: bool, who: str, reason: str) -> None:
        """Let `host` receive instances (enable) or not (disable)."""
        ...


@dataclass(frozen=True)
class DomainReport:
    """One domain event an agent reported (see docs/agent.md)."""

    domain: str  # the libvirt UUID
    name: str
    kind: str  # started, stopped, crashed, watchdog, paused, resumed, rebooted, agent_*
    detail: str = ""
    requested: bool = False  # the stop/reset was asked through the agent's API
    time: float = 0.0


class AgentInbox(Protocol):
    """Where the running controller takes what host agents report."""

    async def domain_events(self, host: str, events: Sequence[DomainReport]) -> int:
        """Handle the events in order; how many concerned known instances."""
        ...

    async def domain_inventory(self, host: str, domains: Sequence[Mapping[str, str]]) -> None: ...


class InstanceLauncher(Protocol):
    def launch(self, instance_id: str) -> None:
        """Start defining and starting the instance (returns at once)."""
        ...


@dataclass
class AppContext:
    settings: Settings
    store: Store
    clock: Clock
    ids: IdGen
    tokens: TokenTable
    # Set by the service once the engine runs; absent in a bare API app.
    liveness: Callable[[], Mapping[str, Liveness]] | None = None
    operations: HostOperations | None = None
    bmc_box: SecretBox | None = None  # encrypts stored BMC passwords; None: no key set
    inbox: AgentInbox | None = None
    launcher: InstanceLauncher | None = None  # set when a cloud adapter defines instances

    def liveness_of(self, host: str) -> Liveness | None:
        return None if self.liveness is None else self.liveness().get(host)


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.vmha
    return ctx


def no_nul_characters(request: Request) -> None:
    """Refuse NUL characters in the path and query string: no name or
    filter contains one, and PostgreSQL text cannot store one."""
    if "\x00" in request.url.path or "%00" in request.url.path:
        raise ValidationError("path", "must not contain NUL characters")
    for key, value in request.query_params.multi_items():
        if "\x00" in key or "\x00" in value:
            raise ValidationError(f"query.{key}", "must not contain NUL characters")


@contextmanager
def field_prefix(prefix: str) -> Iterator[None]:
    """Re-raise domain ValidationErrors with `prefix.` before the field, so
    the client learns whether the body or the query string was wrong."""
    try:
        yield
    except ValidationError as exc:
        field = f"{prefix}.{exc.field}" if exc.field else prefix
        raise ValidationError(field, exc.reason) from exc


@contextmanager
def references(**fields: str) -> Iterator[None]:
    """Turn the store's NotFound for a *referenced* resource into a 422 on
    the body field that named it, e.g. `references(segment="segment")`:
    a host naming a missing segment is bad input, not a missing host."""
    try:
        yield
    except NotFound as exc:
        for field, kind in fields.items():
            if exc.kind == kind:
                raise ValidationError(
                    f"body.{field}", f"{exc.detail}; create it first or name another"
                ) from exc
        raise
