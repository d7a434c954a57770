"""Ports: what vmha's logic needs from the world, as small Protocols.

The engine, the API and the simulator talk to the world only through these.
Each port has a real adapter and a fake in `vmha.adapters.<port>` (the fake
is shared by unit tests and the simulator). Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, runtime_checkable

from vmha.domain.agents import AgentRecord, Registered, Registration
from vmha.domain.bmc import BmcRecord
from vmha.domain.commands import Command
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
    | jobs      | created_at, updated_at, state, kind, id | kind, state, subject, project    |

    The jobs' `project` filter keeps the jobs about that project's instances
    (instance recovery, action, decision: the project their data recorded
    when they were created), never a host recovery.
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

    def matches(self, event: Event) -> bool:
        """Whether `event` passes the type, subject and project filters."""
        if self.types and not type_matches(event.type, self.types):
            return False
        if self.subject is not None and event.subject != self.subject:
            return False
        return self.project is None or event.project == self.project


def type_matches(event_type: str, patterns: Sequence[str]) -> bool:
    """Exact type, or a prefix when the pattern ends with '*'."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if event_type.startswith(pattern[:-1]):
                return True
        elif event_type == pattern:
            return True
    return False


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


@dataclass(frozen=True)
class Leadership:
    """Who claimed the recovery engine in the store last (Store.leadership)."""

    holder: str = ""
    epoch: int = 0  # 0: never claimed
    since: float = 0.0


class Store(Protocol):
    """Durable state. Every mutating call takes `events`, written in the same
    transaction as the change (the outbox of DESIGN.md rule 5).

    Errors: NotFound, Conflict (duplicate key, referenced resource, stale
    job generation), StaleWrite (a Conflict: a host, instance or job written
    from a copy older than the stored record, see vmha.domain.model.VERSIONED;
    nothing is written), StoreUnavailable (database down). Calls are
    synchronous; async callers run them in a thread (the engine reads and
    writes through `AsyncStore`, vmha.adapters.store.aio).
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
    def host_versions(self) -> dict[str, int]:
        """Every host's name and stored version: cheap, so a reader that
        caches hosts reads again only those whose version moved."""
        ...
    def get_hosts(self, names: Sequence[str]) -> list[Host]:
        """The named hosts that exist (any order)."""
        ...
    def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host: ...
    def update_hosts(self, changes: Sequence[tuple[Host, Sequence[Event]]]) -> list[Host | None]:
        """`update_host` for many hosts in ONE transaction (a mass silence
        moves thousands at once): each host is written, with its events,
        if its stored version is still the one it was read at (and its
        segment unchanged); one that moved meanwhile or is gone is skipped
        and its events not written. Results in order: the stored host, or
        None where skipped (the caller reads it again and retries it alone).
        NotLeader on a fenced view that lost the lead (nothing written)."""
        ...
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
        subscription, pruned now and then); other records stay until the
        subscription goes.
        NotFound when the subscription is gone."""
        ...

    def save_progress(self, progress: Mapping[str, tuple[Sequence[Delivery], int]]) -> None:
        """`save_deliveries(id, deliveries, cursor)` for every entry, all in
        one transaction (the dispatcher's checkpoint); subscriptions that
        are gone are skipped."""
        ...

    def list_deliveries(
        self, subscription_id: str, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Delivery records, newest event first; NotFound without the subscription."""
        ...

    # jobs (key: id; filters: kind, state, subject, project)
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
    def agent_hosts(self) -> frozenset[str]:
        """The hosts with a registered agent (no secrets read)."""
        ...
    def agent_marks(self) -> dict[str, int]:
        """Per registered agent, a number that changes whenever its secret is
        written (no secret opened): whether to read the agents again."""
        ...
    def register_agents(self, registrations: Sequence[Registration]) -> list[Registered]:
        """In one transaction: create each missing host (an existing one gets
        the registration's address and capacity), and save each agent's
        record, keeping the secret of an agent already registered. NotFound
        for a missing segment (nothing is written). Results in order."""
        ...

    # BMC credentials (key: host; removed with their host; password encrypted)
    def save_bmc(self, bmc: BmcRecord) -> BmcRecord:
        """Create or replace the host's BMC record; NotFound without the host."""
        ...

    def get_bmc(self, host: str) -> BmcRecord:
        """NotFound when the host has no stored BMC."""
        ...

    def delete_bmc(self, host: str) -> None: ...

    # leadership: the fencing token of the recovery engine (issue 15)
    def claim_leadership(self, holder: str, now: float) -> int:
        """Make `holder` the leader: a new epoch, higher than any before,
        returned. Writes through views fenced with older epochs fail."""
        ...

    def leadership(self) -> Leadership: ...

    def fenced(self, epoch: int) -> Store:
        """This store, whose writes to jobs, hosts and instances raise
        NotLeader (nothing written) once the claimed epoch is not `epoch`
        any more: the leader's engine writes through it."""
        ...

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


class AsyncInventory(Protocol):
    """The inventory reads of the engine's detector loop, awaited: a real
    database's calls run off the event loop, so a slow store never holds up
    heartbeat handling (vmha.adapters.store.aio). Same semantics and errors
    as the `Store` calls of the same names. `inline`: the calls complete
    without waiting (the simulator's in-memory store), so a caller may await
    them in line instead of in a task of their own."""

    @property
    def inline(self) -> bool: ...

    async def list_segments(self, query: ListQuery) -> Page[Segment]: ...
    async def host_versions(self) -> dict[str, int]: ...
    async def get_hosts(self, names: Sequence[str]) -> list[Host]: ...
    async def agent_hosts(self) -> frozenset[str]: ...
    # what the cloud's inventory adds (vmha.engine.cloudsync)
    async def create_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment: ...
    async def create_host(self, host: Host, events: Sequence[Event] = ()) -> Host: ...


class AsyncHostWrites(Protocol):
    """The engine's writes of host states, awaited (one batch = one
    transaction). Same semantics and errors as the `Store` calls."""

    async def update_hosts(
        self, changes: Sequence[tuple[Host, Sequence[Event]]]
    ) -> list[Host | None]: ...
    async def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host: ...
    async def get_host(self, name: str) -> Host: ...


class AsyncEvents(Protocol):
    """Events without a state change (guard, overload, isolation), awaited;
    and read back (the guard's own events, when the engine starts)."""

    async def append_events(self, events: Sequence[Event]) -> list[Event]: ...
    async def list_events(self, query: EventQuery) -> list[Event]: ...


class AsyncJobs(Protocol):
    """Jobs, awaited: the job runners' reads and every step's save."""

    async def create_job(self, job: Job, events: Sequence[Event] = ()) -> Job: ...
    async def get_job(self, job_id: str) -> Job: ...
    async def list_jobs(self, query: ListQuery) -> Page[Job]: ...
    async def save_job(self, job: Job, expected_generation: int,
                       events: Sequence[Event] = ()) -> Job: ...


class AsyncInstances(Protocol):
    """Instances and their policies, awaited (what a job step reads and
    writes; the cloud's inventory creates and forgets instances too)."""

    async def get_instance(self, instance_id: str) -> Instance: ...
    async def list_instances(self, query: ListQuery) -> Page[Instance]: ...
    async def update_instance(self, instance: Instance,
                              events: Sequence[Event] = ()) -> Instance: ...
    async def create_instance(self, instance: Instance,
                              events: Sequence[Event] = ()) -> Instance: ...
    async def delete_instance(self, instance_id: str, events: Sequence[Event] = ()) -> None: ...
    async def get_policy(self, name: str) -> NamedPolicy: ...


class AsyncAgents(Protocol):
    """The registered agents, awaited (no secrets opened by these two)."""

    async def agent_hosts(self) -> frozenset[str]: ...
    async def agent_marks(self) -> dict[str, int]: ...


class AsyncStore(AsyncInventory, AsyncHostWrites, AsyncEvents, AsyncJobs, AsyncInstances,
                 AsyncAgents, Protocol):
    """Every awaited concern of the engine together: what
    `vmha.adapters.store.aio.async_view` gives (a blocking store's calls in
    the adapter's threads, an in-memory one's in line)."""


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


@runtime_checkable
class Scheduling(Protocol):
    """A cloud whose own scheduler may pick a move's target: `start_instance`
    and `instance_state` accept the target `"scheduler"` (the server's
    current host, once it left its old one), and `placed_on` says where the
    instance runs now. OpenStack (Nova's scheduler) has it; libvirt does not."""

    async def placed_on(self, instance: Instance) -> str | None:
        """The host the cloud runs `instance` on now (None: it cannot say)."""
        ...


@runtime_checkable
class AppChecked(Protocol):
    """A cloud whose `instance_state` reads RUNNING for some instances only
    once their application answers (libvirt: the spec's `health_url`). The
    verify step says so (vmha.domain.timeline: the app_answering phase)."""

    def checks_app(self, instance: Instance) -> bool:
        """Does `instance_state` wait for this instance's application?"""
        ...


@dataclass(frozen=True)
class GuestResult:
    """What a command run inside a guest did (its guest agent's answer)."""

    ok: bool  # exit code 0 within the timeout
    detail: str  # "exit 0 in 0.8 s", "exit 3: <stderr's start>", "timed out after 30 s"


@runtime_checkable
class GuestControl(Protocol):
    """A cloud that can act inside a guest: run a command through its QEMU
    guest agent and ask it to reboot (guest agent, else ACPI). libvirt (the
    hosts' agents) has it; a cloud without it fails such escalation steps,
    and the next step runs."""

    async def exec_in_guest(self, instance: Instance, host: str, command: Sequence[str],
                            timeout_s: float) -> GuestResult: ...

    async def reboot_instance(self, instance: Instance, host: str) -> None: ...


class PeerProber(Protocol):
    """Asks a host's agent whether it can reach another host (confirmation)."""

    async def probe(self, via: str, target: str, timeout_s: float) -> bool | None:
        """True: `via` reached `target`; False: it could not; None: `via`
        itself did not answer (its verdict does not count)."""
        ...


class Bus(Protocol):
    """The outbox's news in this process: the store hands over the events
    of each commit, and the readers of the outbox (SSE streams, the webhook
    dispatcher, AMQP) wake at once and take them instead of polling the
    store. The store stays the truth: `since` says None whenever the bus
    cannot vouch for every event (vmha.adapters.bus.local)."""

    @property
    def newest(self) -> int:
        """The newest event id committed in this process (0: none yet)."""
        ...

    def committed(self, events: Sequence[Event]) -> None:
        """These events (with ids) are committed (any thread)."""
        ...

    def since(self, after: int) -> list[Event] | None:
        """Every event committed after `after`, or None: read the store."""
        ...

    async def wait(self, after: int, timeout: float) -> bool:
        """Until an event newer than `after` is committed here (True), or
        `timeout` (False)."""
        ...


# (host, seq, sent_at, arrived_at): one verified heartbeat; arrived_at is
# when the controller's kernel received it
Arrival = tuple[str, int, float, float]


@dataclass(frozen=True)
class HeartbeatBatch:
    """What the heartbeat intake hands the engine on a tick."""

    arrivals: Sequence[Arrival]  # accepted since the last take, oldest first
    read_until: float  # every heartbeat received before this is in here or earlier
    lost_until: float = 0.0  # the kernel dropped heartbeats (buffer full) before this


class HeartbeatSource(Protocol):
    """Verified heartbeats, pulled by the engine on every detector tick
    (the controller's intake: vmha.adapters.heartbeat.intake)."""

    def take(self) -> HeartbeatBatch:
        """Heartbeats accepted since the last call; the detector judges
        silence only up to `read_until`, and not across `lost_until`."""
        ...

    def stats(self) -> Mapping[str, int]:
        """Counters: accepted and dropped by reason, `kernel_drops`, ..."""
        ...


class Letter(Protocol):
    """One command for the engine, and where its answer goes."""

    @property
    def command(self) -> Command: ...

    def answer(self, result: object) -> None: ...
    def refuse(self, error: BaseException) -> None: ...


class Mailbox(Protocol):
    """The engine's side of the controller's inbox (vmha.controller.inbox):
    drained by the running engine, closed when it stops."""

    def close(self) -> None: ...
    async def receive(self) -> Letter: ...


@dataclass(frozen=True)
class ControllerInfo:
    """What one controller announces to the others: its name, its API's URL,
    its heartbeat address (host:port, UDP) and its last verdicts on its
    share of the hosts (`report`: a vmha.engine.shard.ShardReport as JSON,
    "" when it has none, e.g. while it leads)."""

    name: str
    api_url: str = ""
    heartbeat: str = ""
    report: str = ""


@dataclass(frozen=True)
class CoordView:
    """One round of coordination, as this controller sees it.

    `members` are the controllers alive in the group (sorted by name);
    `leader` holds the recovery engine's lease (None: nobody, e.g. no
    quorum); `leading` says whether that is this controller, and
    `valid_until` (monotonic seconds) until when its lease is certainly
    still held (0.0 when not leading). `healthy` is False when the
    coordination service could not be reached this round (`error` says why).
    `lease_s` is the lease's length; `leader_since` the monotonic time this
    controller learned the current leader."""

    members: tuple[ControllerInfo, ...] = ()
    leader: str | None = None
    leading: bool = False
    valid_until: float = 0.0
    healthy: bool = True
    error: str = ""
    lease_s: float = 0.0
    revision: int = 0  # the coordination service's token for the leader's term


class Coordinator(Protocol):
    """Group membership and leader election on a coordination service
    (etcd; `local` for a single controller): vmha.adapters.coord.

    Calls are synchronous (the etcd client is): callers run them in a
    thread. `step()` is one round: keep this controller's lease, stand for
    leader when nobody holds it, read the group. It never raises: a failed
    round is a view with `healthy=False`, and a leader whose lease may have
    run out is no longer `leading`.
    """

    name: str

    def join(self, info: ControllerInfo) -> None: ...
    def step(self) -> CoordView: ...
    def report(self, text: str) -> None:
        """Publish `text` as this controller's `report` from the next round on."""
        ...
    def resign(self) -> None:
        """Give up leadership and membership at once (a clean stop)."""
        ...
    def abstain(self, yes: bool) -> None:
        """From the next round on, do not stand for leader (and give the
        leader key up if this controller holds it), or stand again; the
        lease and the membership stay (vmha.domain.handover)."""
        ...


# -- reading helpers over the ports (what every reader of the store needs) ------

GUARD_EVENTS = ("segment.recovery_paused", "segment.recovery_resumed")


def list_all(
    fetch: Callable[[ListQuery], Page[T]], filters: Mapping[str, str] | None = None
) -> list[T]:
    """Every item of a paged list call, e.g. `list_all(store.list_hosts)`."""
    out: list[T] = []
    marker: str | None = None
    while True:
        page = fetch(ListQuery(limit=1000, marker=marker, filters=filters or {}))
        out.extend(page.items)
        if not page.next_marker or not page.items:
            return out
        marker = page.next_marker


async def list_all_async(
    fetch: Callable[[ListQuery], Awaitable[Page[T]]], filters: Mapping[str, str] | None = None
) -> list[T]:
    """`list_all` over an awaited list call (vmha.ports.AsyncStore's)."""
    out: list[T] = []
    marker: str | None = None
    while True:
        page = await fetch(ListQuery(limit=1000, marker=marker, filters=filters or {}))
        out.extend(page.items)
        if not page.next_marker or not page.items:
            return out
        marker = page.next_marker


def guard_query(segment: str, since: int = 0) -> EventQuery:
    """A page of the mass-failure guard's events of `segment` (paused,
    resumed) after event `since`: read them all, oldest first, with
    `guard_events`; the last one says whether the segment is paused."""
    return EventQuery(since=since, types=GUARD_EVENTS, subject=segment, limit=1000)


def guard_events(store: Store, segment: str) -> list[Event]:
    """Every guard event of `segment` (guard_query), oldest first."""
    out: list[Event] = []
    since = 0
    while True:
        page = store.list_events(guard_query(segment, since))
        out.extend(page)
        if len(page) < 1000:
            return out
        since = page[-1].id
