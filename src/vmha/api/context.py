"""What every request handler needs, kept on `app.state.vmha` (no globals).

`create_app` builds one `AppContext`; routes get it through the `context`
dependency. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request

from vmha.adapters.fencing.secrets import SecretBox
from vmha.api.auth import TokenTable
from vmha.config import Settings
from vmha.controller.inbox import NOT_RUNNING, Inbox
from vmha.domain.commands import Command
from vmha.domain.model import Host
from vmha.errors import NotFound, TemporaryError, ValidationError
from vmha.ports import Bus, Clock, IdGen, ListQuery, Page, Store


@dataclass(frozen=True)
class Liveness:
    """What the running detector knows of one host's heartbeats."""

    heartbeat_age_s: float | None  # None: never heard since the controller started
    phi: float


class HostView(Protocol):
    """The running engine's hosts, for the API's host reads
    (vmha.controller.hostview): a page in O(page size), no store query.
    None from `page`/`get`: read the store instead (no engine here leads,
    or it has not read its hosts yet)."""

    def page(self, query: ListQuery) -> Page[Host] | None: ...

    def get(self, name: str) -> Host | None: ...

    def written(self, names: Sequence[str]) -> None:
        """The API wrote (or deleted) these hosts: the view shows it from now on."""


@dataclass
class AppContext:
    settings: Settings
    store: Store
    clock: Clock
    ids: IdGen
    tokens: TokenTable
    # Set by the service when this process runs the engine; absent in a bare
    # API app (whose engine requests then answer 503).
    # one host's liveness, O(1) (a page of hosts asks once per host listed)
    liveness: Callable[[str], Liveness | None] | None = None
    bmc_box: SecretBox | None = None  # encrypts stored BMC passwords; None: no key set
    inbox: Inbox | None = None  # the one door into controller state (vmha.controller.inbox)
    bus: Bus | None = None  # news of this process's commits: wakes the SSE streams
    defines_instances: bool = False  # the cloud adapter starts instances that have a spec
    can_rebuild: bool = False  # the cloud adapter rebuilds instances (the `rebuild` step)
    # the engine's load and heartbeat counters (vmha.controller.service.Service.controller_status)
    controller_status: Callable[[], Mapping[str, Any]] | None = None
    # agents registered through this API: (host, secret), so the heartbeat
    # intake knows them at once instead of at its next store refresh
    on_registered: Callable[[Sequence[tuple[str, str]]], None] | None = None
    # the controllers' group and this one's part in it (GET /v1/controllers)
    controllers: Callable[[], Mapping[str, Any]] | None = None
    hosts: HostView | None = None  # host reads from the engine's cache (else the store)

    async def ask(self, command: Command) -> Any:
        """Hand `command` to the running engine and return its answer; 503
        (TemporaryError) when this process runs none."""
        if self.inbox is None:
            raise TemporaryError(NOT_RUNNING, 5.0)
        return await self.inbox.ask(command)

    def liveness_of(self, host: str) -> Liveness | None:
        return None if self.liveness is None else self.liveness(host)

    def host_page(self, query: ListQuery) -> Page[Host]:
        """A page of hosts: the engine's view when there is one, else the store's."""
        page = self.hosts.page(query) if self.hosts is not None else None
        return page if page is not None else self.store.list_hosts(query)

    def host(self, name: str) -> Host:
        """Host `name` (NotFound if none): the engine's copy, else the store's."""
        found = self.hosts.get(name) if self.hosts is not None else None
        return found if found is not None else self.store.get_host(name)

    def hosts_written(self, *names: str) -> None:
        """The API wrote these hosts: host reads show it from now on."""
        if self.hosts is not None:
            self.hosts.written(names)


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
            shown = key.replace("\x00", "\\x00")  # never echo the NUL itself
            raise ValidationError(f"query.{shown}", "must not contain NUL characters")


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
