"""What a Nova snapshot becomes in vmha: the inventory sync's command
(controller.openstack.inventory_command) sent through a real engine's inbox and
applied by the engine (vmha.engine.cloudsync), on the fake store. The real
Nova feeds it in tests/e2e/test_openstack.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine_harness import World

from vmha.adapters.cloud.openstack_inventory import (
    NovaHost,
    NovaServer,
    Snapshot,
    _hosts,
    read_snapshot,
    to_server,
    vmha_name,
)
from vmha.adapters.store.fake import FakeStore
from vmha.config import OpenStackConfig
from vmha.controller.inbox import Inbox
from vmha.controller.openstack import InventorySync, inventory_command
from vmha.domain import commands as cmd
from vmha.domain.errors import PermissionDenied
from vmha.domain.model import HostState, InstanceState
from vmha.ports import EventQuery, PowerState, list_all
from vmha.sim.loop import run_virtual


def server(sid: str, host: str, meta: dict[str, str] | None = None, status: str = "ACTIVE",
           task: str | None = None) -> NovaServer:
    """As Nova answers GET /servers/detail at 2.47 (flavor embedded)."""
    return to_server({"id": sid, "name": f"web {sid}!", "tenant_id": "p1", "status": status,
                      "OS-EXT-SRV-ATTR:host": host, "OS-EXT-STS:task_state": task,
                      "metadata": meta or {},
                      "flavor": {"vcpus": 2, "ram": 512, "disk": 1, "extra_specs": {}}}, {})


HOSTS = (NovaHost("c1"), NovaHost("c2", aggregates=("rack-b",)))
Step = Callable[[FakeStore], Any]


def synced(*steps: Snapshot | Step, **cfg: object) -> FakeStore:
    """Run a real engine and send each snapshot through its inbox as the
    sync does (a callable step changes the store in between, as the API
    or the engine's own jobs would)."""
    settings = OpenStackConfig(auth_url="http://k/v3", default_segment="cloud", **cfg)

    async def main() -> FakeStore:
        w = World()
        w.start()
        for step in steps:
            if isinstance(step, Snapshot):
                await w.ask(inventory_command(step, settings))
            else:
                step(w.store)
        await w.close()
        return w.store

    return run_virtual(main())


def test_hosts_and_servers_of_every_project_become_vmha_records() -> None:
    store = synced(Snapshot(HOSTS, (server("s1", "c1", {"vmha:priority": "900"}),)))
    assert {h.name: h.segment for h in list_all(store.list_hosts)} == {"c1": "cloud", "c2": "cloud"}
    inst = store.get_instance("s1")
    assert (inst.name, inst.host, inst.project, inst.resources.vcpus) == ("web-s1", "c1", "p1", 2)
    assert inst.policy is not None and inst.policy.priority == 900


def test_segments_from_aggregates_when_asked() -> None:
    store = synced(Snapshot(HOSTS, ()), segments="aggregate")
    assert store.get_host("c2").segment == "rack-b" and store.get_host("c1").segment == "cloud"


def test_bad_metadata_is_published_once_and_the_default_applies() -> None:
    snap = Snapshot(HOSTS, (server("s1", "c1", {"vmha:priority": "high"}),))
    store = synced(snap, snap)
    found = store.list_events(EventQuery(types=("instance.policy_invalid",)))
    assert len(found) == 1 and found[0].payload["key"] == "vmha:priority"
    assert found[0].payload["value"] == "high" and found[0].project == "p1"
    assert store.get_instance("s1").policy is None



def test_app_actions_from_metadata_and_a_bad_one_stops_nothing() -> None:
    """A bad `vmha:app_actions` is published and ignored for its server only;
    the servers after it in the same snapshot are still synced."""
    snap = Snapshot(HOSTS, (
        server("s1", "c1", {"vmha:app": "auto", "vmha:app_actions": "exec:/bin/sh -c boom"}),
        server("s2", "c2", {"vmha:app": "auto", "vmha:app_actions": '["reset", "rebuild"]'})))
    store = synced(snap, snap)
    found = store.list_events(EventQuery(types=("instance.policy_invalid",)))
    assert [(e.subject, e.payload["key"]) for e in found] == [("s1", "vmha:app_actions")]
    assert store.get_instance("s1").policy is None
    good = store.get_instance("s2").policy
    assert good is not None and [str(s) for s in good.app_actions] == ["reset", "rebuild"]

def test_host_and_state_follow_nova_only_while_settled() -> None:
    seen: list[str | None] = []

    def c1_to(state: HostState) -> Step:
        return lambda store: store.update_host(replace(store.get_host("c1"), state=state))

    def host_of_s1(store: FakeStore) -> None:
        seen.append(store.get_instance("s1").host)

    store = synced(
        Snapshot(HOSTS, (server("s1", "c1"),)),
        Snapshot(HOSTS, (server("s1", "c2", task="rebuilding", status="REBUILD"),)),
        host_of_s1,  # a task in progress: the engine's record wins
        c1_to(HostState.SUSPECT),
        Snapshot(HOSTS, (server("s1", "c2", status="SHUTOFF"),)),
        host_of_s1,  # its host is not up: a recovery may run
        c1_to(HostState.UP),
        Snapshot(HOSTS, (server("s1", "c2", status="SHUTOFF"),)))
    assert seen == ["c1", "c1"]
    got = store.get_instance("s1")
    assert (got.host, got.state) == ("c2", InstanceState.STOPPED)


def test_a_server_gone_from_nova_is_forgotten() -> None:
    store = synced(Snapshot(HOSTS, (server("s1", "c1"), server("s2", "c2"))),
                   Snapshot(HOSTS, (server("s2", "c2"),)))
    assert [i.id for i in list_all(store.list_instances)] == ["s2"]


def test_nova_names_become_valid_vmha_names() -> None:
    assert vmha_name("web server #1", "abcdef123") == "web-server-1"
    assert vmha_name("???", "abcdef123") == "server-abcdef12"
    assert len(vmha_name("x" * 300, "id")) == 64


class Stub:
    """Nova as the sync reads it: one snapshot, whatever is asked."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def image_props(self, image_id: str) -> dict[str, str]:
        return {}


def test_the_sync_writes_nothing_itself_and_skips_rounds_while_it_does_not_lead(
        monkeypatch: Any) -> None:
    """The sync only reads Nova and asks the engine; a follower asks nothing
    (its inbox is not drained: the leader's engine is the one writer)."""
    import vmha.controller.openstack as osmod

    snap = Snapshot(HOSTS, (server("s1", "c1"),))
    monkeypatch.setattr(osmod, "read_snapshot", lambda nova, images: snap)
    cfg = OpenStackConfig(auth_url="http://k/v3", default_segment="cloud",
                          inventory_interval_s=0.2, inventory_min_gap_s=0.1)
    asked: list[Any] = []

    class Recorder(Inbox):
        async def ask(self, command: Any) -> Any:
            asked.append(command)
            return {}

    leading = [False]

    async def main() -> None:
        sync = InventorySync(Stub(snap), Recorder(), cfg, lambda: leading[0])  # type: ignore[arg-type]
        task = asyncio.ensure_future(sync.run())
        await asyncio.sleep(1.0)
        assert asked == []
        leading[0] = True
        sync.poke()
        for _ in range(200):  # up to 10 s on a loaded machine (the read runs in a thread)
            if asked:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert asked and asked[0] == inventory_command(snap, cfg)
    assert [s.id for s in asked[0].servers] == ["s1"]


async def h1_fails_and_returns(w: World) -> None:
    """h1 loses power 30 s after the engine started, and is back 30 s later."""
    await asyncio.sleep(30)
    w.power_off("h1")
    await asyncio.sleep(30)
    w.silent.discard("h1")
    w.prober.heal("h1")


def held(*names: str) -> cmd.CloudInventory:
    """Nova's hosts h1..h3, `names` still disabled by a recovery job of vmha."""
    return cmd.CloudInventory(tuple(cmd.CloudHost(h, "s1", held=h in names)
                                    for h in ("h1", "h2", "h3")), ())


def test_a_host_the_cloud_still_holds_after_a_controller_restart_is_enabled() -> None:
    """h1 fails, is recovered and returns while Nova refuses to enable it
    (its evacuations are not completed yet); the controller restarts before
    Nova agrees. The new controller knows nothing of the pending re-enable:
    Nova's inventory (h1 still disabled by vmha's job) makes it enable h1."""
    async def main() -> tuple[World, int]:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        w.cloud.enable_refusals["h1"] = 1000
        w.start()
        await h1_fails_and_returns(w)
        await asyncio.sleep(45)  # up again (30 s healthy), re-enable refused
        assert w.host_state("h1") == "up" and "h1" in w.cloud.disabled
        await w.stop_controller()
        w.cloud.enable_refusals["h1"] = 0  # Nova would agree now
        engine = w.start()
        await asyncio.sleep(30)
        tried = w.cloud.calls.count(("enable", "", "h1"))
        assert "h1" in w.cloud.disabled  # nobody asks: the restart forgot it
        await w.ask(held("h1"))
        await asyncio.sleep(5)
        assert "h1" not in engine.monitor.not_enabled
        await w.close()
        return w, tried

    w, tried = run_virtual(main())
    assert "h1" not in w.cloud.disabled
    assert w.cloud.calls.count(("enable", "", "h1")) == tried + 1


def test_only_an_up_host_outside_jobs_and_maintenance_is_enabled_for_the_cloud() -> None:
    """A held host that is suspect, in maintenance or in a recovery job
    stays held; one the cloud does not hold (an operator's disable is not
    vmha's hold) is never enabled by the sync, and is a target again."""
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h3")
        engine = w.start()
        await asyncio.sleep(20)
        w.store.update_host(replace(w.store.get_host("h2"), maintenance=True))
        w.silent.add("h1")  # heartbeats stop: suspect, not confirmed (peers reach it)
        await asyncio.sleep(4)
        engine.monitor.not_enabled.add("h3")  # e.g. an attempt that gave up
        await w.ask(held("h1", "h2"))
        await asyncio.sleep(5)
        assert "h3" not in engine.monitor.not_enabled
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h1") in ("suspect", "partitioned")
    assert w.cloud.count("enable") == 0


def test_nova_services_disabled_by_a_recovery_job_are_held() -> None:
    class Services:
        def call(self, method: str, path: str, mv: str) -> Any:
            if path.startswith("/os-aggregates"):
                return {"aggregates": []}
            return {"services": [
                {"host": "c1", "status": "disabled", "state": "up", "forced_down": True,
                 "disabled_reason": "vmha job job-1: host failed and fenced"},
                {"host": "c2", "status": "disabled", "state": "up", "forced_down": False,
                 "disabled_reason": "vmha: disabled by operator alice"},
                {"host": "c3", "status": "enabled", "state": "up", "forced_down": False,
                 "disabled_reason": None}]}

    hosts = {h.name: h for h in _hosts(Services())}  # type: ignore[arg-type]
    assert [n for n, h in hosts.items() if h.held] == ["c1"]
    cfg = OpenStackConfig(auth_url="http://k/v3", default_segment="cloud")
    command = inventory_command(Snapshot(tuple(hosts.values()), ()), cfg)
    assert [h.held for h in command.hosts] == [True, False, False]


def test_a_host_held_for_an_operator_stays_out_until_maintenance_on_and_off() -> None:
    """Segment s1 holds recovered hosts (`hold_recovered_hosts`): h1 comes
    back and stays `recovered`, and Nova's service stays disabled even when
    the inventory says vmha's job holds it. An operator's maintenance on,
    then off, makes h1 up; the next inventory enables it in Nova
    (docs/openstack.md, "Host return")."""
    async def main() -> tuple[World, list[tuple[str, str]]]:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.store.update_segment(replace(w.store.get_segment("s1"), hold_recovered_hosts=True))
        w.add_vm("vm1", "h1")
        w.start()
        await h1_fails_and_returns(w)
        await asyncio.sleep(60)
        await w.ask(held("h1"))
        await asyncio.sleep(5)
        seen = [(w.host_state("h1"), "held" if "h1" in w.cloud.disabled else "enabled")]
        await w.ask(cmd.SetMaintenance("h1", True, by="alice"))
        await w.ask(cmd.SetMaintenance("h1", False, by="alice"))
        await asyncio.sleep(5)
        seen.append((w.host_state("h1"), "held" if "h1" in w.cloud.disabled else "enabled"))
        await w.ask(held("h1"))
        await asyncio.sleep(5)
        await w.close()
        return w, seen

    w, seen = run_virtual(main())
    assert seen == [("recovered", "held"), ("up", "held")]
    assert w.host_state("h1") == "up" and "h1" not in w.cloud.disabled
    recovered = w.store.list_events(EventQuery(types=("host.recovered",)))
    assert [str(e.payload["reason"]).split(":")[0] for e in recovered] == [
        "recovered", "held for an operator"]


def test_a_re_enable_that_stopped_while_the_host_was_briefly_suspect_is_taken_up_again() -> None:
    """h1 returns; Nova refuses to enable it until its nova-compute has
    restarted; meanwhile h1 misses heartbeats for a few seconds (a busy
    machine) and is suspect, so that attempt ends. h1 is up again at once
    ("heartbeats resumed", no new return), stays no evacuation target, and
    the next inventory, where Nova still holds it, enables it."""
    async def main() -> tuple[World, set[str]]:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        w.cloud.enable_refusals["h1"] = 1000
        engine = w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        await asyncio.sleep(30)
        w.silent.discard("h1")
        w.prober.heal("h1")
        w.fencer.power["h1"] = PowerState.ON  # powered on again
        await asyncio.sleep(50)  # up again, re-enable refused
        assert w.host_state("h1") == "up"
        w.silent.add("h1")
        await asyncio.sleep(9)  # longer than the 5 s between two tries
        assert w.host_state("h1") in ("suspect", "partitioned")
        w.silent.discard("h1")
        w.cloud.enable_refusals["h1"] = 0  # Nova agrees from now on
        await asyncio.sleep(20)
        assert w.host_state("h1") == "up" and "h1" in w.cloud.disabled
        not_target = set(engine.monitor.not_enabled)
        await w.ask(held("h1"))
        await asyncio.sleep(5)
        await w.close()
        return w, not_target

    w, not_target = run_virtual(main())
    assert not_target == {"h1"}  # while Nova holds it, the planner does not pick it
    assert "h1" not in w.cloud.disabled


def test_a_reading_older_than_the_engines_write_does_not_undo_it() -> None:
    """Nova read before a recovery moved s1 (still on c1 then), applied
    after the move ended: vmha keeps s1 on c2 (c1 is down: no later
    reading could correct it). A reading taken after the move is followed."""
    async def main() -> tuple[str | None, str | None]:
        w = World()
        engine = w.start()
        await w.ask(inventory_command(Snapshot(HOSTS, (server("s1", "c1"),)), CFG))
        await asyncio.sleep(5)
        before = engine.clock.now()
        await asyncio.sleep(5)
        await engine.cluster.change_instance("s1",
                                             lambda i: (replace(i, host="c2"), []))  # the move
        await asyncio.sleep(5)
        stale = replace(Snapshot(HOSTS, (server("s1", "c1"),)), read_at=before)
        await w.ask(inventory_command(stale, CFG))
        kept = w.store.get_instance("s1").host
        fresh = replace(stale, read_at=engine.clock.now())
        await w.ask(inventory_command(fresh, CFG))
        followed = w.store.get_instance("s1").host
        await w.close()
        return kept, followed

    assert run_virtual(main()) == ("c2", "c1")


CFG = OpenStackConfig(auth_url="http://k/v3", default_segment="cloud")


class GroupedNova:
    """Nova as read_snapshot reads it: three computes, a server per entry of
    `servers` (id -> host), and the server groups of every project."""

    def __init__(self, servers: dict[str, str], groups: list[dict[str, Any]],
                 refuse_groups: bool = False) -> None:
        self.servers, self.groups, self.refuse_groups = servers, groups, refuse_groups
        self.paths: list[tuple[str, str]] = []

    def call(self, method: str, path: str, mv: str) -> Any:
        self.paths.append((path, mv))
        if path.startswith("/os-services"):
            return {"services": [{"host": h, "state": "up", "status": "enabled"}
                                 for h in ("c1", "c2", "c3")]}
        if path.startswith("/os-aggregates"):
            return {"aggregates": []}
        if path.startswith("/os-server-groups"):
            if self.refuse_groups:
                raise PermissionDenied("GET /os-server-groups: Nova answered 403: policy")
            return {"server_groups": self.groups}
        return {"servers": [
            {"id": sid, "name": sid, "tenant_id": "p1", "status": "ACTIVE",
             "OS-EXT-SRV-ATTR:host": host, "metadata": {"vmha:host": "auto"},
             "flavor": {"vcpus": 1, "ram": 512, "disk": 1, "extra_specs": {}}}
            for sid, host in self.servers.items()]}

    def image_props(self, image_id: str) -> dict[str, str]:
        return {}


GROUPS = [
    {"id": "g-hard", "policy": "anti-affinity", "rules": {}, "members": ["a1", "a2"]},
    {"id": "g-soft", "policy": "soft-anti-affinity", "rules": {}, "members": ["s1", "s2"]},
    {"id": "g-two", "policy": "anti-affinity", "rules": {"max_server_per_host": 2},
     "members": ["t1", "t2"]},
    {"id": "g-aff", "policy": "affinity", "rules": {}, "members": ["f1"]},
]
SERVERS = {"a1": "c1", "a2": "c2", "s1": "c1", "s2": "c2", "t1": "c1", "t2": "c2",
           "f1": "c3", "plain": "c3"}


def test_members_of_novas_strict_anti_affinity_groups_carry_the_group() -> None:
    """Nova's server groups of every project (2.64): only strict
    `anti-affinity` ones with one member per host become vmha groups,
    named nova:<uuid>."""
    nova = GroupedNova(SERVERS, GROUPS)
    snap = read_snapshot(nova, nova.image_props)  # type: ignore[arg-type]
    assert {s.id: s.group for s in snap.servers if s.group} == {
        "a1": "nova:g-hard", "a2": "nova:g-hard"}
    asked = [(p, mv) for p, mv in nova.paths if p.startswith("/os-server-groups")]
    assert asked == [("/os-server-groups?all_projects=True&limit=1000&offset=0", "2.64")]
    store = synced(snap)
    assert {i.id: i.anti_affinity_group for i in list_all(store.list_instances)
            if i.anti_affinity_group} == {"a1": "nova:g-hard", "a2": "nova:g-hard"}


def test_a_refused_server_group_list_still_syncs_the_servers(caplog: Any) -> None:
    nova = GroupedNova(SERVERS, GROUPS, refuse_groups=True)
    snap = read_snapshot(nova, nova.image_props)  # type: ignore[arg-type]
    assert len(snap.servers) == len(SERVERS) and not any(s.group for s in snap.servers)
    assert "server groups are not read" in caplog.text


def test_novas_group_follows_nova_and_an_operators_own_group_stays() -> None:
    """The sync owns `nova:` groups only: dropped when Nova drops the
    group; a group set through vmha's API on a server in no Nova group
    is left alone."""
    in_group = Snapshot(HOSTS, (replace(server("s1", "c1"), group="nova:g1"), server("s2", "c2")))
    plain = Snapshot(HOSTS, (server("s1", "c1"), server("s2", "c2")))

    def operator_sets_group(store: FakeStore) -> None:
        store.update_instance(replace(store.get_instance("s2"), anti_affinity_group="db"))

    store = synced(in_group, operator_sets_group, plain)
    assert store.get_instance("s1").anti_affinity_group is None
    assert store.get_instance("s2").anti_affinity_group == "db"


def test_a_failed_hosts_server_goes_where_no_member_of_its_nova_group_runs() -> None:
    """a1 (c1) and a2 (c2) are in one Nova anti-affinity group; c2 has more
    room than c3. c1 fails: a1 goes to c3, not next to a2 (without the
    group the planner would pick c2)."""
    def a1_target(group: str | None) -> str:
        async def main() -> str:
            w = World()
            w.add_cluster(["c1", "c2", "c3"], ram_mb=8192)
            w.start()
            where = {"a1": "c1", "a2": "c2", "f1": "c3", "f2": "c3"}
            servers = tuple(replace(server(sid, host), disk_gb=0,
                                    group=group if sid.startswith("a") else None)
                            for sid, host in where.items())
            hosts = tuple(NovaHost(h) for h in ("c1", "c2", "c3"))
            await w.ask(inventory_command(Snapshot(hosts, servers), CFG))
            for sid, host in where.items():
                w.cloud.running.setdefault(sid, set()).add(host)
            await asyncio.sleep(30)
            w.power_off("c1")
            await asyncio.sleep(60)
            await w.close()
            return next(h for op, i, h in w.cloud.calls if op == "start" and i == "a1")

        return run_virtual(main())

    assert a1_target("nova:g1") == "c3"
    assert a1_target(None) == "c2"
