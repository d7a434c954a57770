"""Ports: what vmha's logic needs from the world, as small Protocols.

The engine, the API and the simulator talk to the world only through these.
Each port has a real adapter and a fake in `vmha.adapters.<port>` (the fake
is shared by unit tests and the simulator). Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from vmha.domain.agents import AgentRecord
from vmha.domain.bmc import BmcRecord
from vmha.domain.model import Event, Host, Instance, InstanceState, Job, Segment
from vmha.domain.policy import HAPolicy

T = TypeVar("T")


class Clock(Protocol):
    """Time for the controller. Real: wall clock; simulated: virtual."""

    def now(self) -> float:
        """Seconds since the epoch (virtual in the simulator)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class IdGen(Protocol):
    def new_id(self) -> str:
        """A new unique identifier (uuid4 text in production)."""
        ...


@dataclass(frozen=True)
class ListQuery:
    """Pagination, filtering and sorting for list calls.

    `marker` is the key (name or id) of the last item of the previous page;
    `filters` maps a filterable field to the wanted value; `sort` names a
    sortable field (ties broken by the key), `desc` reverses it. Fields:

    | resource  | sort (default first)                    | filters                          |
    | segments  | name                                    | enabled                          |
    | hosts     | name, state, segment                    | segment, state                   |
    | instances | id, name, state, host, project          | host, segment, state, project    |
    | policies  | name                                    | -                                |
    | jobs      | created_at, updated_at, state, kind, id | kind, state, subject             |

    Anything else is a ValidationError naming `sort` or the filter.
    """

    limit: int = 100
    marker: str | None = None
    sort: str | None = None
    desc: bool = False
    filters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_marker: str | None = None


@dataclass(frozen=True)
class EventQuery:
    since: int = 0  # return events with id > since
    types: Sequence[str] = ()  # exact types or prefixes ending in '*'
    subject: str | None = None
    project: str | None = None  # only instance events of this project
    limit: int = 100


class DeliveryStatus(str, enum.Enum):
    """Where one event stands for one webhook subscription."""

    DELIVERED = "delivered"
    RETRYING = "retrying"  # failed at least once; the dispatcher keeps trying
    DEAD = "dead"  # gave up after the attempt limit (a dead letter)
    REDELIVER = "redeliver"  # a dead letter an operator asked to send again


@dataclass(frozen=True)
class Subscription:
    """A webhook subscription. `cursor` is the id of the last event the
    dispatcher has finished with (delivered or dead-lettered): a restarted
    dispatcher resumes after it. `project`, when set, limits the
    subscription to that project's events (forced for project tokens);
    `owner` is the project of the token that created it ("" for staff)."""

    id: str
    url: str
    secret: str
    event_types: tuple[str, ...] = ("*",)
    subject: str | None = None
    project: str | None = None
    owner: str = ""
    created_at: float = 0.0
    cursor: int = 0


@dataclass(frozen=True)
class Delivery:
    """The delivery state of one event to one subscription."""

    subscription: str
    event_id: int
    status: DeliveryStatus
    attempts: int = 0
    last_error: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True)
class NamedPolicy:
    name: str
    policy: HAPolicy
    description: str = ""


class Store(Protocol):
    """Durable state. Every mutating call takes `events`, written in the same
    transaction as the change (the outbox of DESIGN.md rule 5).

    Errors: NotFound, Conflict (duplicate key, referenced resource, stale
    job generation), StoreUnavailable (database down). Calls are synchronous;
    async callers run them in a thread.
    """

    # segments (key: name)
    def create_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment: ...
    def get_segment(self, name: str) -> Segment: ...
    def list_segments(self, query: ListQuery) -> Page[Segment]: ...
    def update_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment: ...
    def delete_segment(self, name: str, events: Sequence[Event] = ()) -> None: ...

    # hosts (key: name; filters: segment, state)
    def create_host(self, host: Host, events: Sequence[Event] = ()) -> Host: ...
    def get_host(self, name: str) -> Host: ...
    def list_hosts(self, query: ListQuery) -> Page[Host]: ...
    def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host: ...
    def delete_host(self, name: str, events: Sequence[Event] = ()) -> None: ...

    # instances (key: id; filters: host, segment, state, project)
    def create_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance: ...
    def get_instance(self, instance_id: str) -> Instance: ...
    def list_instances(self, query: ListQuery) -> Page[Instance]: ...
    def update_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance: ...
    def delete_instance(self, instance_id: str, events: Sequence[Event] = ()) -> None: ...

    # named policies (key: name)
    def create_policy(self, policy: NamedPolicy) -> NamedPolicy: ...
    def get_policy(self, name: str) -> NamedPolicy: ...
    def list_policies(self, query: ListQuery) -> Page[NamedPolicy]: ...
    def update_policy(self, policy: NamedPolicy) -> NamedPolicy: ...
    def delete_policy(self, name: str) -> None: ...

    # events (the outbox); ids are assigned here, strictly increasing
    def append_events(self, events: Sequence[Event]) -> list[Event]: ...
    def list_events(self, query: EventQuery) -> list[Event]: ...

    def last_event_id(self) -> int:
        """The id of the newest event, 0 when there is none."""
        ...

    # webhook subscriptions (key: id) and their delivery state
    def create_subscription(self, subscription: Subscription) -> Subscription: ...
    def get_subscription(self, subscription_id: str) -> Subscription: ...
    def list_subscriptions(self, owner: str | None = None) -> list[Subscription]:
        """Every subscription (of `owner` when given), oldest first."""
        ...

    def delete_subscription(self, subscription_id: str) -> None:
        """Remove it with its delivery records; NotFound when absent."""
        ...

    def save_deliveries(
        self, subscription_id: str, deliveries: Sequence[Delivery], cursor: int | None = None
    ) -> None:
        """In one transaction: upsert `deliveries` (keyed by event id) and,
        with `cursor`, move the subscription's cursor forward to it (never
        back). Only the newest DELIVERED records are kept (a few hundred per
        subscription); other records stay until the subscription goes.
        NotFound when the subscription is gone."""
        ...

    def list_deliveries(
        self, subscription_id: str, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Delivery records, newest event first; NotFound without the subscription."""
        ...

    # jobs (key: id; filters: kind, state, subject)
    def create_job(self, job: Job, events: Sequence[Event] = ()) -> Job: ...
    def get_job(self, job_id: str) -> Job: ...
    def list_jobs(self, query: ListQuery) -> Page[Job]: ...
    def save_job(
        self, job: Job, expected_generation: int, events: Sequence[Event] = ()
    ) -> Job:
        """Replace a job if its stored generation is still
        `expected_generation`; else Conflict (a newer attempt owns it)."""
        ...

    # registered agents (key: host; removed with their host)
    def save_agent(self, agent: AgentRecord) -> AgentRecord:
        """Create or replace the host's agent record; NotFound without the host."""
        ...

    def get_agent(self, host: str) -> AgentRecord: ...
    def list_agents(self) -> list[AgentRecord]: ...

    # BMC credentials (key: host; removed with their host; password encrypted)
    def save_bmc(self, bmc: BmcRecord) -> BmcRecord:
        """Create or replace the host's BMC record; NotFound without the host."""
        ...

    def get_bmc(self, host: str) -> BmcRecord:
        """NotFound when the host has no stored BMC."""
        ...

    def delete_bmc(self, host: str) -> None: ...

    # health
    def ping(self) -> None:
        """Raise StoreUnavailable when the database cannot be reached."""
        ...

    def schema_current(self) -> bool:
        """Whether every migration has been applied."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


class PowerState(str, enum.Enum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class Fencer(Protocol):
    """One power-fencing method (ipmi, redfish, fence_agent ...) for hosts.

    Errors: TemporaryError when the BMC cannot be reached within the
    method's timeout; Unauthenticated on bad credentials. `power_off`
    returns once the request is accepted: confirmation is a later
    `power_status` read that says OFF.
    """

    method: str

    async def power_status(self, host: Host) -> PowerState: ...
    async def power_off(self, host: Host) -> None: ...
    async def power_on(self, host: Host) -> None: ...


class Cloud(Protocol):
    """Operations on instances and compute services (libvirt or OpenStack).

    Every call is idempotent, keyed by the instance id: starting an instance
    that already runs on `host` succeeds without a second copy.
    """

    async def start_instance(self, instance: Instance, host: str, stopped: bool = False) -> None:
        """Define the instance on `host` and start it (or leave it stopped)."""
        ...

    async def stop_instance(self, instance: Instance, host: str) -> None: ...
    async def reset_instance(self, instance: Instance, host: str) -> None: ...
    async def instance_state(self, instance: Instance, host: str) -> InstanceState: ...
    async def disable_host(self, host: str, reason: str) -> None: ...
    async def enable_host(self, host: str) -> None: ...


class PeerProber(Protocol):
    """Asks a host's agent whether it can reach another host (confirmation)."""

    async def probe(self, via: str, target: str, timeout_s: float) -> bool | None:
        """True: `via` reached `target`; False: it could not; None: `via`
        itself did not answer (its verdict does not count)."""
        ...


class Bus(Protocol):
    """Hands stored events to subscribers (SSE, webhooks, AMQP)."""

    async def publish(self, events: Sequence[Event]) -> None: ...
