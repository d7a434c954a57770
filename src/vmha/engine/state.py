"""The controller's view of the cluster, written through to the Store.

Used by every engine part (detection, jobs, instances). Segments and hosts
are cached in memory (the detector reads them ten times a second) and every
change is written to the store together with its event before the cache is
updated; `refresh()` re-reads them so changes made through the API appear.
Instances and jobs are read from the store when needed.

Store calls are synchronous and made directly on the event loop: the fake
store is in memory and must stay on the (virtual) loop; a real database
call is short. This is the one place to change if that stops being true.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TypeVar

from vmha.domain.errors import NotFound
from vmha.domain.model import Event, Host, HostState, Instance, Segment, transition_host
from vmha.domain.policy import DEFAULT_POLICY, HAPolicy
from vmha.ports import Bus, ListQuery, Page, Store

log = logging.getLogger("vmha.engine")
T = TypeVar("T")


def list_all(
    fetch: Callable[[ListQuery], Page[T]], filters: dict[str, str] | None = None
) -> list[T]:
    """Every item of a paged list call."""
    out: list[T] = []
    marker: str | None = None
    while True:
        page = fetch(ListQuery(limit=1000, marker=marker, filters=filters or {}))
        out.extend(page.items)
        if not page.next_marker or not page.items:
            return out
        marker = page.next_marker


class Cluster:
    """Cached segments and hosts plus write-through helpers."""

    def __init__(self, store: Store, bus: Bus | None = None) -> None:
        self.store = store
        self.bus = bus
        self.segments: dict[str, Segment] = {}
        self.hosts: dict[str, Host] = {}
        # Hosts with a registered agent: the only ones the detector watches
        # (a host without an agent sends no heartbeats to miss).
        self.monitored: frozenset[str] = frozenset()
        self.outbox: list[Event] = []  # written events not yet handed to the bus
        self.version = 0  # grows on every host/segment change seen here

    def refresh(self) -> None:
        segments = {s.name: s for s in list_all(self.store.list_segments)}
        hosts = {h.name: h for h in list_all(self.store.list_hosts)}
        monitored = frozenset(a.host for a in self.store.list_agents())
        if segments != self.segments or hosts != self.hosts or monitored != self.monitored:
            self.version += 1
        self.segments, self.hosts, self.monitored = segments, hosts, monitored

    def hosts_of(self, segment: str) -> list[Host]:
        return sorted(
            (h for h in self.hosts.values() if h.segment == segment), key=lambda h: h.name
        )

    # -- writes -----------------------------------------------------------

    def note_sent(self, events: Sequence[Event]) -> None:
        """Queue events already written to the store for the bus."""
        if self.bus is not None:
            self.outbox.extend(events)

    async def flush(self) -> None:
        """Hand written events to the bus (when one is configured)."""
        if self.bus is None or not self.outbox:
            return
        events, self.outbox = self.outbox, []
        await self.bus.publish(events)

    def move_host(
        self, name: str, to: HostState, reason: str, now: float, event_type: str | None = None,
        **payload: object,
    ) -> Host | None:
        """Transition host `name` (if allowed) and store it with its event."""
        host = self.hosts.get(name)
        if host is None:
            return None
        if host.state is to and event_type is None:
            return host
        if host.state is to:
            new, event = replace(host, state_reason=reason), None
        else:
            new, event = transition_host(host, to, reason, now)
        events: list[Event] = []
        if event is not None or event_type is not None:
            base = event or Event(type="", subject=name, time=now,
                                  payload={"host": name, "segment": host.segment,
                                           "reason": reason})
            if event_type is not None:
                base = replace(base, type=event_type)
            if payload:
                base = replace(base, payload={**base.payload, **payload})
            events.append(base)
        self.hosts[name] = self.store.update_host(new, events)
        self.version += 1
        self.note_sent(events)
        log.info("host %s: %s -> %s (%s)", name, host.state.value, to.value, reason)
        return self.hosts[name]

    def save_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        self.hosts[host.name] = self.store.update_host(host, events)
        self.version += 1
        self.note_sent(events)
        return self.hosts[host.name]

    def append(self, events: Sequence[Event]) -> None:
        if events:
            self.store.append_events(events)
            self.note_sent(events)

    def update_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        stored = self.store.update_instance(instance, events)
        self.note_sent(events)
        return stored

    # -- reads --------------------------------------------------------------

    def instances(self, host: str | None = None) -> list[Instance]:
        filters = {"host": host} if host is not None else None
        return list_all(self.store.list_instances, filters)

    def get_instance(self, instance_id: str) -> Instance | None:
        try:
            return self.store.get_instance(instance_id)
        except NotFound:
            return None

    def policy_of(self, instance: Instance, host: Host | None = None) -> HAPolicy:
        """Inline policy, else the named one, else the segment's default."""
        if instance.policy is not None:
            return instance.policy
        names: Iterable[str | None] = (instance.policy_name,)
        if host is not None and host.segment in self.segments:
            names = (instance.policy_name, self.segments[host.segment].default_policy)
        for name in names:
            if name:
                try:
                    return self.store.get_policy(name).policy
                except NotFound:
                    log.warning("instance %s: policy %r does not exist", instance.id, name)
        return DEFAULT_POLICY
