"""What the host agents report, and new instances to start: the handlers.

Called by the Engine for the commands it takes from its inbox: a guest or
application event of an instance (`InstanceEvent`), a host's hypervisor
events and inventory in libvirt mode (`DomainEvents`, `Inventory`: domains
are named by their libvirt UUID, see the libvirt cloud adapter), a
cloud's whole inventory (`CloudInventory`, vmha.engine.cloudsync), and the
first start of an instance vmha defines itself (`Launch`). What to do
about a failure is vmha.engine.instances' (and vmha.domain.restart's).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.domain import commands as cmd
from vmha.domain.model import InstanceState

if TYPE_CHECKING:
    from vmha.engine.core import Engine

log = logging.getLogger("vmha.engine")
# Hypervisor events the guest layer reacts to, and the agent's probe and
# guest-agent ping verdicts (app and guest layers); paused, resumed,
# rebooted and guest-agent (dis)connections are only informative.
DOMAIN_EVENT_KINDS = frozenset({"started", "stopped", "crashed", "watchdog"})
CHECK_KINDS = frozenset({"app_failed", "app_recovered", "guest_unresponsive",
                         "guest_responsive"})
RUNNING_STATES = ("running", "paused", "crashed")


async def launch(e: Engine, c: cmd.Launch) -> None:
    """Define and start a new instance that has a spec (returns at once)."""
    e.launcher.launch(c.instance)


async def instance_event(e: Engine, c: cmd.InstanceEvent) -> None:
    """started, stopped, crashed, watchdog, app_failed or app_ok."""
    await e.instances.event(c.instance, c.kind, c.detail)


async def _instance_ids(e: Engine) -> dict[str, str]:
    """Domain UUID -> instance id, for every instance the engine knows."""
    return {domain_uuid(i.id): i.id for i in await e.cluster.instances()}


async def domain_events(e: Engine, c: cmd.DomainEvents) -> int:
    """A host's domain events, in order; how many concerned known instances."""
    ids = await _instance_ids(e)
    known = 0
    for report in c.reports:
        iid = ids.get(report.domain)
        if iid is None:
            log.info("domain event %s of unknown domain %s (%s) on %s ignored", report.kind,
                     report.name, report.domain, c.host)
            continue
        known += 1
        await domain_event(e, c.host, iid, report)
    return known


async def domain_event(e: Engine, host: str, instance_id: str, r: cmd.DomainReport) -> bool:
    """Events of instances recorded on another host are ignored (a late
    report from a host the instance has left); stops, resets and reboots
    that vmha or a user asked for, and the stop that follows a `poweroff`
    watchdog action, are not failures. True if it was acted on."""
    inst = await e.cluster.get_instance(instance_id)
    if inst is None or inst.host != host:
        where = "unknown" if inst is None else f"recorded on {inst.host}"
        log.info("domain event %s of instance %s from %s ignored: %s", r.kind, instance_id,
                 host, where)
        return False
    # A stop of a guest already recorded stopped (its watchdog's `poweroff`
    # action, reported just before) is the chosen recovery, not a failure.
    settled = r.kind == "stopped" and inst.state is InstanceState.STOPPED
    if r.requested or settled or r.kind not in DOMAIN_EVENT_KINDS | CHECK_KINDS:
        log.debug("domain event %s of %s on %s: nothing to do", r.kind, inst.name, host)
        return False
    await e.instances.event(instance_id, r.kind, _check_detail(r))
    return True


def _check_detail(r: cmd.DomainReport) -> str:
    """A probe verdict in words: the check, its last error, the count."""
    if r.kind not in CHECK_KINDS or not r.probe:
        return r.detail
    if r.kind in ("app_failed", "guest_unresponsive"):
        error = f": {r.detail}" if r.detail else ""
        return f"{r.probe} failed {r.count} times in a row{error}"
    return f"{r.probe} passes again ({r.count} in a row)"


async def cloud_inventory(e: Engine, c: cmd.CloudInventory) -> dict[str, int]:
    """What the cloud (Nova) knows now: hosts and servers (vmha.engine.cloudsync);
    hosts the cloud still holds for a finished recovery are enabled again."""
    counts = await e.cloudsync.apply(c)
    await e.cloud_holds(frozenset(h.name for h in c.hosts if h.held),
                  frozenset(h.name for h in c.hosts))
    return counts


async def inventory(e: Engine, c: cmd.Inventory) -> None:
    """A host's domains. One that runs there while its instance is recorded
    on another host is logged loudly (vmha never starts it there: the
    record is the truth); definitions left behind by instances that moved
    away (a host back from a power-off) stay, shut off and harmless."""
    ids = await _instance_ids(e)
    for dom in c.domains:
        iid = ids.get(dom["uuid"])
        inst = await e.cluster.get_instance(iid) if iid else None
        if inst is None or inst.host in (None, c.host):
            continue
        if dom["state"] in RUNNING_STATES:
            log.error("instance %s is recorded on %s but %s reports its domain %s; "
                      "check both hosts before anything else", inst.name, inst.host, c.host,
                      dom["state"])
