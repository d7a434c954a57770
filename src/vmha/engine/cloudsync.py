"""The cloud's inventory, folded into vmha's records by the engine.

The OpenStack inventory sync (vmha.controller.openstack) reads Nova and sends
what it found as one `CloudInventory` command through the inbox; the
engine hands it to `CloudSync.apply`, so hosts, instances and their
observed state keep one writer (DESIGN.md, "One writer").

- Hosts: one per compute host of the cloud, created when missing in the
  segment the command names (created too when missing); a known host
  keeps its segment unless the cloud manages it (`managed`, a host
  aggregate) and it is up.
- Instances: one per placed server, id = the server's id, with project,
  resources and the policy derived from the cloud's keys
  (vmha.domain.cloudpolicy). A bad key keeps the segment default and
  publishes `instance.policy_invalid`, once per server, key and value for
  as long as this engine runs. Its anti-affinity group is the cloud's
  (`nova:<uuid>`, for the planner) while the cloud keeps it in one; a
  group set through vmha's API (no `nova:` prefix) is left alone when the
  cloud has none. Host and state follow the cloud only while
  the instance's vmha host is up, the server has no task in progress and
  no recovery job of vmha moves it: during a recovery vmha's record wins,
  and so does a record the engine wrote after the reading began (a
  reading taken before a move, applied after it ended, would put the
  instance back on its failed host). A server gone from the cloud is
  forgotten.

Its store calls are awaited through the cluster's `io` (vmha.engine.state):
a reading of thousands of servers never holds up the event loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from vmha.domain import commands as cmd
from vmha.domain.cloudpolicy import derive
from vmha.domain.errors import Conflict, NotFound
from vmha.domain.model import Event, Host, HostState, Instance, InstanceState, Segment, Severity
from vmha.domain.policy import HAPolicy
from vmha.domain.restart import make_event
from vmha.engine.state import Cluster
from vmha.ports import Clock

log = logging.getLogger("vmha.engine.cloudsync")


class CloudSync:
    """Applies `CloudInventory` commands; remembers what it reported."""

    def __init__(self, cluster: Cluster, clock: Clock,
                 moving: Callable[[], Awaitable[frozenset[str]]]) -> None:
        self.cluster, self.clock, self.moving = cluster, clock, moving  # ids jobs move now
        self._reported: dict[str, set[tuple[str, str]]] = {}  # server -> (key, value)

    async def apply(self, c: cmd.CloudInventory) -> dict[str, int]:
        counts = {"hosts": 0, "created": 0, "updated": 0, "same": 0, "forgotten": 0}
        await self.cluster.catch_up()
        for ch in c.hosts:
            counts["hosts"] += await self._host(ch)
        await self.cluster.catch_up()
        known = {i.id: i for i in await self.cluster.instances()}
        moving = await self.moving() | self._newer(c.read_at)
        seen = set()
        for srv in c.servers:
            host = self.cluster.hosts.get(srv.host)
            if host is None:
                continue  # a compute that is not a compute host of the cloud (yet)
            seen.add(srv.id)
            policy = await self._policy(srv, host.segment, c.evacuable_tags)
            counts[await self._instance(srv, known.get(srv.id), policy, srv.id in moving)] += 1
        for iid in sorted(set(known) - seen - moving):
            with contextlib.suppress(NotFound):
                await self.cluster.io.delete_instance(iid)
                self._reported.pop(iid, None)
                counts["forgotten"] += 1
                log.info("cloud inventory: server %s is gone from the cloud; forgotten", iid)
        return counts

    def _newer(self, read_at: float | None) -> frozenset[str]:
        """Instances the engine wrote after the cloud was read (a move that
        began or ended meanwhile): the reading is older than their records.
        What was written before is forgotten here."""
        written = self.cluster.written_at
        if read_at is None:
            return frozenset()
        for iid in [i for i, at in written.items() if at < read_at]:
            del written[iid]
        return frozenset(written)

    async def _segment(self, name: str) -> str:
        if name not in self.cluster.segments:
            with contextlib.suppress(Conflict):
                await self.cluster.io.create_segment(Segment(name=name))
        return name

    async def _host(self, ch: cmd.CloudHost) -> int:
        """1 when the host was created or moved to another segment."""
        current = self.cluster.hosts.get(ch.name)
        if current is None:
            with contextlib.suppress(Conflict):
                segment = await self._segment(ch.segment)
                await self.cluster.io.create_host(Host(name=ch.name, segment=segment))
                log.info("cloud inventory: host %s (segment %s) from the cloud", ch.name,
                         ch.segment)
                return 1
            return 0
        if not ch.managed or current.state is not HostState.UP or current.segment == ch.segment:
            return 0
        segment = await self._segment(ch.segment)

        def move(host: Host) -> tuple[Host, list[Event]] | None:
            return None if host.segment == segment else (replace(host, segment=segment), [])

        self.cluster.change_host(ch.name, move)
        return 1

    async def _policy(self, srv: cmd.CloudServer, segment: str,
                      evacuable_tags: bool) -> HAPolicy | None:
        seg = self.cluster.segments.get(segment)
        default = None
        if seg is not None and seg.default_policy:
            with contextlib.suppress(NotFound):
                default = (await self.cluster.io.get_policy(seg.default_policy)).policy
        derived = derive(srv.layers, default, evacuable_tags)
        reported = self._reported.setdefault(srv.id, set())
        probe = Instance(id=srv.id, name=srv.name, host=srv.host, project=srv.project)
        events = []
        for p in derived.problems:
            if (p.key, p.value) in reported:
                continue
            reported.add((p.key, p.value))
            events.append(make_event(
                probe, "instance.policy_invalid", self.clock.now(),
                f"{p.key}={p.value!r} ({p.layer}): {p.reason}; the segment default applies",
                Severity.WARNING, key=p.key, value=p.value, layer=p.layer))
        self.cluster.append(events)
        return derived.policy

    async def _instance(self, srv: cmd.CloudServer, current: Instance | None,
                        policy: HAPolicy | None, moving: bool) -> str:
        """What happened to it: created, updated or same."""
        if current is None:
            with contextlib.suppress(Conflict):
                await self.cluster.io.create_instance(Instance(
                    id=srv.id, name=srv.name, host=srv.host, project=srv.project,
                    resources=srv.resources, state=srv.state, policy=policy,
                    anti_affinity_group=srv.group))
                return "created"
            return "same"

        def follow(inst: Instance) -> tuple[Instance, list[Event]] | None:
            new = replace(inst, name=srv.name, project=srv.project, resources=srv.resources,
                          policy=policy, anti_affinity_group=_group(srv, inst))
            if not moving and self._settled(srv, inst):
                new = replace(new, host=srv.host, state=srv.state)
            return None if new == inst else (new, [])

        before = current
        after = await self.cluster.change_instance(srv.id, follow)
        return "updated" if after is not None and after != before else "same"

    def _settled(self, srv: cmd.CloudServer, inst: Instance) -> bool:
        """Whether the cloud's host and state are the truth for `inst` now."""
        if srv.busy or srv.state is InstanceState.UNKNOWN:
            return False
        home = self.cluster.hosts.get(inst.host or "")
        return home is None or home.state is HostState.UP


def _group(srv: cmd.CloudServer, inst: Instance) -> str | None:
    """The cloud's group when it has one; else the record's own, unless that
    one came from the cloud (`nova:`) and the cloud has dropped it."""
    if srv.group:
        return srv.group
    own = inst.anti_affinity_group
    return None if own and own.startswith(cmd.CLOUD_GROUP_PREFIX) else own
