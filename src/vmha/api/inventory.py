"""The live inventory as the API reads it, for what-if and the dashboard.

`read_inventory(store)` reads every segment, host, instance and named
policy through the same store calls the `/v1` routes use, resolves each
instance's policy, and finds the segments whose recovery is paused now
(the last guard event of the segment is `segment.recovery_paused`, the
rule the engine itself restores a pause with). Synchronous store reads:
call it from a thread (`asyncio.to_thread`) in async handlers.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmha.domain.whatif import Inventory, policy_for
from vmha.ports import Store, guard_events, list_all


def pause_reasons(store: Store, segments: Iterable[str]) -> dict[str, str]:
    """Segment -> why its recovery is paused, for the segments paused now
    (their last guard event is `segment.recovery_paused`)."""
    paused = {}
    for name in segments:
        events = guard_events(store, name)
        if events and events[-1].type == "segment.recovery_paused":
            paused[name] = str(events[-1].payload.get("reason", "recovery paused"))
    return paused


def paused_segments(store: Store, segments: Iterable[str]) -> frozenset[str]:
    return frozenset(pause_reasons(store, segments))


def read_inventory(store: Store) -> Inventory:
    segments = {s.name: s for s in list_all(store.list_segments)}
    hosts = {h.name: h for h in list_all(store.list_hosts)}
    instances = list_all(store.list_instances)
    named = {p.name: p.policy for p in list_all(store.list_policies)}
    policies = {i.id: policy_for(i, segments, hosts, named) for i in instances}
    return Inventory(segments, hosts, instances, policies,
                     paused_segments(store, sorted(segments)))
