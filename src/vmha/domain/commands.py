"""Commands: everything the world may ask of the running controller.

The API (operators, users), the host agents' reports and the simulator do
not write controller state: they send one of these typed, frozen commands
through the controller's inbox (vmha.controller.inbox), and the engine,
which drains it, is the only writer of hosts' states, jobs and instances'
observed state (DESIGN.md, "One writer"). A command is plain data, so it can
be logged, replayed in a scenario, or one day forwarded to another
controller. Each names who asked (`by`) when a person did.

Adding a command: a frozen dataclass here, a member of `Command`, and its
handler in the engine's dispatch table (vmha.engine.core); the
engine refuses a command it has no handler for.

Pure values, standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vmha.domain.cloudpolicy import Layers
from vmha.domain.model import Capacity, InstanceState


@dataclass(frozen=True)
class SetMaintenance:
    """Enter or leave maintenance (the host moves to `maintenance` or `up`)."""

    host: str
    enabled: bool
    reason: str = ""
    by: str = ""


@dataclass(frozen=True)
class FenceHost:
    """An operator's power-off through the host's power levels (or only
    `method`), run as its recovery job. Answer: the Job."""

    host: str
    by: str
    method: str | None = None


@dataclass(frozen=True)
class FenceAck:
    """An operator confirms the host is powered off (the manual level)."""

    host: str
    by: str
    force: bool = False


@dataclass(frozen=True)
class ResumeSegment:
    """Resume a segment the mass-failure guard paused."""

    segment: str
    by: str


@dataclass(frozen=True)
class SetScheduling:
    """Let a host receive instances (enabled) or not, through the cloud."""

    host: str
    enabled: bool
    by: str
    reason: str = ""


@dataclass(frozen=True)
class ReadPower:
    """Every power method's reading of a host (a query, no action).
    Answer: {method: "on" | "off" | "error: ..."}."""

    host: str


@dataclass(frozen=True)
class InstanceAction:
    """Run an action on an instance as a job. Answer: the Job."""

    instance: str
    action: str
    target: str | None
    by: str


@dataclass(frozen=True)
class Decide:
    """Answer a custom decision. Answer: (decision job, action job or None)."""

    token: str
    action: str
    by: str
    project: str | None = None


@dataclass(frozen=True)
class Launch:
    """Define and start a new instance that has a spec (libvirt mode)."""

    instance: str


@dataclass(frozen=True)
class InstanceEvent:
    """A guest or application event of an instance, from its host's agent:
    started, stopped, crashed, watchdog, app_failed, app_ok."""

    instance: str
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class DomainReport:
    """One domain event an agent reported (see docs/agent.md)."""

    domain: str  # the libvirt UUID
    name: str
    kind: str  # started stopped crashed watchdog paused resumed rebooted agent_* app_* guest_*
    detail: str = ""
    requested: bool = False  # the stop/reset was asked through the agent's API
    time: float = 0.0
    probe: str = ""  # app_* and guest_* kinds: the check behind the change
    count: int = 0  # its failures (or successes) in a row


@dataclass(frozen=True)
class DomainEvents:
    """A host's hypervisor events, in order (libvirt mode). Answer: how many
    concerned instances vmha knows."""

    host: str
    reports: tuple[DomainReport, ...]


@dataclass(frozen=True)
class Inventory:
    """Every domain a host's hypervisor has, with its state."""

    host: str
    domains: tuple[Mapping[str, str], ...]


@dataclass(frozen=True)
class CloudHost:
    """A compute host the cloud (Nova) has. `segment`: where it goes when
    vmha does not know it yet; `managed`: the cloud decides its segment (a
    host aggregate), so a known host that is up moves there too; `held`:
    its compute service is out of scheduling because a recovery job of vmha
    took it out (and nobody has enabled it since)."""

    name: str
    segment: str
    managed: bool = False
    held: bool = False


CLOUD_GROUP_PREFIX = "nova:"  # a group the cloud keeps: nova:<uuid of Nova's server group>


@dataclass(frozen=True)
class CloudServer:
    """A server the cloud has placed on a host, as the cloud records it.
    `state` UNKNOWN: a status vmha does not map; `busy`: a task (a move, a
    rebuild) is in progress there; `group`: the anti-affinity group the
    cloud keeps it in (`nova:<uuid>`), None when none."""

    id: str
    name: str
    host: str
    project: str
    state: InstanceState
    busy: bool = False
    resources: Capacity = field(default_factory=Capacity)
    layers: Layers = field(default_factory=lambda: Layers({}, {}, {}))
    group: str | None = None


@dataclass(frozen=True)
class CloudInventory:
    """Everything the cloud knows now (OpenStack: every nova-compute and
    every placed server of every project), read by the inventory sync.
    `evacuable_tags`: honour RHOSO's `evacuable` tags (vmha.domain.cloudpolicy).
    `read_at`: when the reading began (the engine's clock); a record the
    engine wrote since is newer than what was read, and stays (None: no
    such check). Answer: counts of what changed ({"hosts": n, "created": n, ...})."""

    hosts: tuple[CloudHost, ...]
    servers: tuple[CloudServer, ...]
    evacuable_tags: bool = False
    read_at: float | None = None


Command = (
    SetMaintenance | FenceHost | FenceAck | ResumeSegment | SetScheduling | ReadPower
    | InstanceAction | Decide | Launch | InstanceEvent | DomainEvents | Inventory
    | CloudInventory
)
