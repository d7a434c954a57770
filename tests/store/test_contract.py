"""The Store contract, run against every backend (fake, sqlite, postgres)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from vmha.domain.errors import Conflict, NotFound, StaleWrite, ValidationError
from vmha.domain.jobs import (
    ActionData,
    DecisionData,
    FencePhase,
    FenceProgress,
    HostRecoveryData,
    InstanceRecoveryData,
    Move,
    MoveState,
    PauseCause,
)
from vmha.domain.model import (
    Capacity,
    Event,
    FenceMethod,
    Host,
    HostState,
    Instance,
    InstanceState,
    Job,
    JobKind,
    JobState,
    JobStep,
    RecoveryMethod,
    Segment,
    Severity,
    StepState,
    SubjectKind,
)
from vmha.domain.policy import HAPolicy, LayerMode, Probe, ProbeKind, WatchdogAction
from vmha.domain.spec import InstanceSpec
from vmha.ports import EventQuery, ListQuery, NamedPolicy, Page, Store

POLICY = HAPolicy(
    host=LayerMode.AUTO_NOTIFY,
    guest=LayerMode.NOTIFY,
    priority=900,
    window_s=120.5,
    evacuate_to_stopped=True,
    watchdog_action=WatchdogAction.POWEROFF,
    probes=(
        Probe(ProbeKind.HTTP, "http://10.0.0.5:8080/health", interval_s=5.0, timeout_s=1.5),
        Probe(ProbeKind.TCP, "22", failure_threshold=5),
    ),
)


def ev(type_: str, subject: str = "h1", project: str = "", **payload: object) -> Event:
    return Event(type=type_, subject=subject, time=10.25, project=project, payload=payload)


def all_events(store: Store) -> list[Event]:
    return store.list_events(EventQuery(limit=10000))


def segment(store: Store, name: str = "s1") -> Segment:
    return store.create_segment(Segment(name))


def keys(page_items: object, attr: str) -> list[str]:
    return [getattr(item, attr) for item in page_items]  # type: ignore[attr-defined]


def collect(
    list_call: Callable[[ListQuery], Page[Any]], query: ListQuery, attr: str
) -> list[list[str]]:
    """Every page of a list call, following next_marker."""
    pages: list[list[str]] = []
    while True:
        page = list_call(query)
        pages.append(keys(page.items, attr))
        if page.next_marker is None:
            return pages
        assert page.next_marker == pages[-1][-1]
        query = dataclasses.replace(query, marker=page.next_marker)


# -- round trips -------------------------------------------------------------


def test_segment_round_trip(store: Store) -> None:
    store.create_policy(NamedPolicy("gold", POLICY))
    seg = Segment(
        "rack-1", RecoveryMethod.RH_PRIORITY, enabled=False, mass_failure_threshold=0.3,
        description="first rack", default_policy="gold", hold_recovered_hosts=True,
    )
    assert store.create_segment(seg) == seg
    assert store.get_segment("rack-1") == seg
    changed = dataclasses.replace(seg, description="renamed", enabled=True)
    assert store.update_segment(changed) == changed
    assert store.get_segment("rack-1") == changed
    store.delete_segment("rack-1")
    with pytest.raises(NotFound):
        store.get_segment("rack-1")


def test_host_round_trip(store: Store) -> None:
    segment(store)
    host = Host(
        "h1", "s1", address="10.0.0.1", state=HostState.SUSPECT,
        capacity=Capacity(64, 262144, 2000), reserved=True, bmc="bmc-h1",
        fence_levels=(("redfish", "ipmi"), ("agent_watchdog",)),
        state_reason="no heartbeat for 2.4 s", state_since=1234.5678,
    )
    assert store.create_host(host) == host
    got = store.get_host("h1")
    assert got == host
    assert isinstance(got.fence_levels[0], tuple)
    moved = dataclasses.replace(host, state=HostState.UP, maintenance=True)
    assert store.update_host(moved) == moved
    assert store.get_host("h1") == moved
    store.delete_host("h1")
    with pytest.raises(NotFound):
        store.get_host("h1")


def test_instance_round_trip_with_inline_and_named_policy(store: Store) -> None:
    store.create_policy(NamedPolicy("gold", HAPolicy(priority=100)))
    inst = Instance(
        "i-1", "web-1", "h1", project="p1", resources=Capacity(2, 2048, 20),
        state=InstanceState.CRASHED, policy=POLICY, policy_name="gold",
        anti_affinity_group="web",
    )
    assert store.create_instance(inst) == inst
    got = store.get_instance("i-1")
    assert got == inst
    assert got.policy is not None and got.policy.probes == POLICY.probes
    bare = Instance("i-2", "db-1", None)
    store.create_instance(bare)
    defined = Instance("i-3", "vm3", "h1", spec=InstanceSpec(
        image="lab", address="198.18.1.13/24", health_url="http://198.18.1.13:8080/health"))
    store.create_instance(defined)
    assert store.get_instance("i-3") == defined
    as_xml = dataclasses.replace(defined, spec=InstanceSpec(xml="<domain type='qemu'/>"))
    assert store.update_instance(as_xml) == as_xml
    assert store.get_instance("i-3").spec == as_xml.spec
    assert store.get_instance("i-2") == bare
    changed = dataclasses.replace(inst, policy=None, host="h2")
    assert store.update_instance(changed) == changed
    assert store.get_instance("i-1") == changed
    store.delete_instance("i-1")
    with pytest.raises(NotFound):
        store.get_instance("i-1")


def test_policy_round_trip(store: Store) -> None:
    named = NamedPolicy("gold", POLICY, "for databases")
    assert store.create_policy(named) == named
    assert store.get_policy("gold") == named
    changed = NamedPolicy("gold", HAPolicy(app=LayerMode.OFF), "")
    assert store.update_policy(changed) == changed
    assert store.get_policy("gold") == changed
    assert keys(store.list_policies(ListQuery()).items, "name") == ["gold"]
    store.delete_policy("gold")
    with pytest.raises(NotFound):
        store.get_policy("gold")


def test_job_round_trip_keeps_steps_floats_and_typed_data(store: Store) -> None:
    data = HostRecoveryData(
        host="h1", segment="s1", levels=((FenceMethod.REDFISH, FenceMethod.IPMI),
                                         (FenceMethod.AGENT_WATCHDOG,)),
        last_seen=0.1 + 0.2, fence=FenceProgress(1, FencePhase.CONFIRM, True, "ipmi off", 3.5),
        disabled=True, planned=True, acked_by="ann", paused_for=PauseCause.BLOCKED,
        resume_to=JobState.EVACUATING, rate_limited_until=12.25,
        instances={"i-1": Move(MoveState.REPLAN, "h2", 2, True, "start failed", ("h3",), 1),
                   "i-2": Move(MoveState.SKIPPED, custom=True)})
    job = Job(
        "j-1", JobKind.HOST_RECOVERY, "h1", state=JobState.EVACUATING, generation=4,
        steps=(
            JobStep("fence", StepState.DONE, 0.1 + 0.2, 1.0 / 3.0, "redfish confirmed off"),
            JobStep("evacuate", StepState.RUNNING, 1700000000.123456),
        ),
        created_at=1700000000.000001, updated_at=1700000001.5, reason="host failed", data=data,
    )
    assert store.create_job(job) == job
    got = store.get_job("j-1")
    assert got == job
    assert got.steps[0].started_at == 0.1 + 0.2
    assert isinstance(got.steps, tuple)
    assert got.steps[1].state is StepState.RUNNING
    assert isinstance(got.data, HostRecoveryData)
    assert got.data.instances["i-1"].excluded == ("h3",)
    assert got.data.levels[0] == (FenceMethod.REDFISH, FenceMethod.IPMI)
    for kind, blank in ((JobKind.ACTION, ActionData("i-9")), (JobKind.DECISION,
                        DecisionData("i-9")), (JobKind.INSTANCE_RECOVERY,
                                               InstanceRecoveryData("i-9"))):
        store.create_job(Job(f"j-{kind.value}", kind, "i-9"))
        assert store.get_job(f"j-{kind.value}").data == blank


def test_returned_values_are_detached_from_the_store(store: Store) -> None:
    store.create_job(Job("j-1", JobKind.DECISION, "i-1",
                         data=DecisionData("i-1", allowed=("stop",))))
    got = store.get_job("j-1")
    assert isinstance(got.data, DecisionData)
    got.data.to_storage()["allowed"].append("start")
    assert store.get_job("j-1").data == DecisionData("i-1", allowed=("stop",))
    store.append_events([ev("x.y", k=[1])])
    first = all_events(store)[0]
    first.payload["k"].append(2)
    assert all_events(store)[0].payload == {"k": [1]}


# -- keys, references ---------------------------------------------------------


def test_duplicates_conflict(store: Store) -> None:
    segment(store)
    store.create_host(Host("h1", "s1"))
    store.create_instance(Instance("i-1", "vm", "h1"))
    store.create_policy(NamedPolicy("gold", POLICY))
    store.create_job(Job("j-1", JobKind.ACTION, "i-1"))
    with pytest.raises(Conflict, match="segment 's1' already exists"):
        store.create_segment(Segment("s1"))
    with pytest.raises(Conflict, match="host 'h1' already exists"):
        store.create_host(Host("h1", "s1"))
    with pytest.raises(Conflict, match="instance 'i-1' already exists"):
        store.create_instance(Instance("i-1", "other", None))
    with pytest.raises(Conflict, match="policy 'gold' already exists"):
        store.create_policy(NamedPolicy("gold", HAPolicy()))
    with pytest.raises(Conflict, match="job 'j-1' already exists"):
        store.create_job(Job("j-1", JobKind.ACTION, "x"))


def test_missing_rows_are_not_found(store: Store) -> None:
    segment(store)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: store.get_segment("nope"), "segment"),
        (lambda: store.update_segment(Segment("nope")), "segment"),
        (lambda: store.delete_segment("nope"), "segment"),
        (lambda: store.get_host("nope"), "host"),
        (lambda: store.update_host(Host("nope", "s1")), "host"),
        (lambda: store.delete_host("nope"), "host"),
        (lambda: store.get_instance("nope"), "instance"),
        (lambda: store.update_instance(Instance("nope", "n", None)), "instance"),
        (lambda: store.delete_instance("nope"), "instance"),
        (lambda: store.get_policy("nope"), "policy"),
        (lambda: store.update_policy(NamedPolicy("nope", POLICY)), "policy"),
        (lambda: store.delete_policy("nope"), "policy"),
        (lambda: store.get_job("nope"), "job"),
        (lambda: store.save_job(Job("nope", JobKind.ACTION, "x"), 1), "job"),
    ]
    for call, kind in cases:
        with pytest.raises(NotFound) as info:
            call()
        assert (info.value.kind, info.value.key) == (kind, "nope")


def test_host_needs_an_existing_segment(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        store.create_host(Host("h1", "ghost"), [ev("host.created")])
    assert (info.value.kind, info.value.key) == ("segment", "ghost")
    segment(store)
    store.create_host(Host("h1", "s1"))
    with pytest.raises(NotFound, match="segment 'ghost'"):
        store.update_host(Host("h1", "ghost"))
    assert store.get_host("h1").segment == "s1"
    assert all_events(store) == []


def test_policy_references_must_exist(store: Store) -> None:
    with pytest.raises(NotFound, match="policy 'gold'"):
        store.create_instance(Instance("i-1", "vm", None, policy_name="gold"))
    with pytest.raises(NotFound, match="policy 'gold'"):
        store.create_segment(Segment("s1", default_policy="gold"))


def test_delete_segment_with_hosts_conflicts(store: Store) -> None:
    segment(store)
    store.create_host(Host("h1", "s1"))
    with pytest.raises(Conflict, match="still has 1 host"):
        store.delete_segment("s1", [ev("segment.deleted", "s1")])
    assert all_events(store) == []
    store.delete_host("h1")
    store.delete_segment("s1")
    assert store.list_segments(ListQuery()).items == []


def test_delete_host_with_an_unfinished_recovery_job_conflicts(store: Store) -> None:
    segment(store)
    store.create_host(Host("h1", "s1"))
    store.create_host(Host("h2", "s1"))
    paused = Job("job-7", JobKind.HOST_RECOVERY, "h1", state=JobState.PAUSED, created_at=5.0)
    store.create_job(paused)
    store.create_job(Job("job-8", JobKind.HOST_RECOVERY, "h2", state=JobState.DONE))
    store.create_job(Job("job-9", JobKind.ACTION, "h1"))  # an action's subject is an instance
    with pytest.raises(Conflict) as info:
        store.delete_host("h1")
    assert "job-7 (paused)" in info.value.detail
    assert store.get_host("h1").name == "h1"
    store.delete_host("h2")  # its recovery is over
    store.save_job(dataclasses.replace(paused, state=JobState.FAILED), 1)
    store.delete_host("h1")
    with pytest.raises(NotFound):
        store.get_host("h1")


def test_delete_policy_in_use_conflicts(store: Store) -> None:
    store.create_policy(NamedPolicy("gold", POLICY))
    store.create_segment(Segment("s1", default_policy="gold"))
    store.create_instance(Instance("i-1", "vm", None, policy_name="gold"))
    with pytest.raises(Conflict, match=r"1 instance.*1 segment"):
        store.delete_policy("gold")
    store.delete_instance("i-1")
    store.update_segment(Segment("s1"))
    store.delete_policy("gold")


# -- paging, sorting, filtering ----------------------------------------------


def test_pagination_has_no_gap_and_no_overlap(store: Store) -> None:
    segment(store)
    names = [f"h{n:02d}" for n in range(25)]
    for name in reversed(names):
        store.create_host(Host(name, "s1"))
    pages = collect(store.list_hosts, ListQuery(limit=10), "name")
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [n for p in pages for n in p] == names
    last = store.list_hosts(ListQuery(limit=10, marker="h19"))
    assert last.next_marker is None and keys(last.items, "name") == names[20:]


def test_exact_page_end_has_no_next_marker(store: Store) -> None:
    segment(store)
    for n in range(10):
        store.create_host(Host(f"h{n}", "s1"))
    page = store.list_hosts(ListQuery(limit=10))
    assert len(page.items) == 10 and page.next_marker is None


def test_sort_desc_with_ties_pages_stably(store: Store) -> None:
    segment(store)
    states = [HostState.UP, HostState.FAILED, HostState.SUSPECT]
    for n in range(12):
        store.create_host(Host(f"h{n:02d}", "s1", state=states[n % 3]))
    expected = sorted(
        (states[n % 3].value, f"h{n:02d}") for n in range(12)
    )
    asc = collect(store.list_hosts, ListQuery(limit=5, sort="state"), "name")
    assert [n for p in asc for n in p] == [name for _, name in expected]
    desc = collect(store.list_hosts, ListQuery(limit=5, sort="state", desc=True), "name")
    assert [n for p in desc for n in p] == [name for _, name in reversed(expected)]


def test_jobs_sort_by_created_at_by_default(store: Store) -> None:
    times = [5.0, 1.5, 3.25, 1.5, 9.0]
    for n, t in enumerate(times):
        store.create_job(Job(f"j{n}", JobKind.ACTION, "x", created_at=t))
    expected = [f"j{n}" for _, n in sorted((t, n) for n, t in enumerate(times))]
    pages = collect(store.list_jobs, ListQuery(limit=2), "id")
    assert [j for p in pages for j in p] == expected
    newest = store.list_jobs(ListQuery(limit=1, desc=True))
    assert keys(newest.items, "id") == ["j4"]


def test_instances_sort_by_host_with_unplaced_first(store: Store) -> None:
    store.create_instance(Instance("a", "vm-a", "h2"))
    store.create_instance(Instance("b", "vm-b", None))
    store.create_instance(Instance("c", "vm-c", "h1"))
    page = store.list_instances(ListQuery(sort="host"))
    assert keys(page.items, "id") == ["b", "c", "a"]
    page = store.list_instances(ListQuery(sort="name", desc=True))
    assert keys(page.items, "id") == ["c", "b", "a"]


def test_unknown_marker_is_not_found(store: Store) -> None:
    segment(store)
    with pytest.raises(NotFound) as info:
        store.list_hosts(ListQuery(marker="ghost"))
    assert info.value.key == "ghost"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (ListQuery(sort="address"), "sort"),
        (ListQuery(filters={"colour": "red"}), "colour"),
        (ListQuery(filters={"state": "sleepy"}), "state"),
        (ListQuery(limit=0), "limit"),
        (ListQuery(limit=1001), "limit"),
    ],
)
def test_bad_list_queries_are_validation_errors(
    store: Store, query: ListQuery, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        store.list_hosts(query)
    assert info.value.field == field
    with pytest.raises(ValidationError, match="allowed"):
        store.list_segments(ListQuery(sort="state"))
    with pytest.raises(ValidationError, match="allowed: kind, state, subject"):
        store.list_jobs(ListQuery(filters={"host": "h1"}))


def test_host_filters(store: Store) -> None:
    segment(store, "s1")
    segment(store, "s2")
    store.create_host(Host("a", "s1"))
    store.create_host(Host("b", "s2", state=HostState.FAILED))
    store.create_host(Host("c", "s2"))

    def names(**filters: str) -> list[str]:
        return keys(store.list_hosts(ListQuery(filters=filters)).items, "name")

    assert names(segment="s2") == ["b", "c"]
    assert names(state="failed") == ["b"]
    assert names(segment="s2", state="up") == ["c"]
    assert names(segment="s3") == []


def test_instance_filters(store: Store) -> None:
    segment(store, "s1")
    segment(store, "s2")
    store.create_host(Host("h1", "s1"))
    store.create_host(Host("h2", "s2"))
    store.create_instance(Instance("i1", "a", "h1", project="p1"))
    store.create_instance(Instance("i2", "b", "h2", project="p2"))
    store.create_instance(Instance("i3", "c", "h2", project="p1", state=InstanceState.STOPPED))
    store.create_instance(Instance("i4", "d", None, project="p1"))

    def ids(**filters: str) -> list[str]:
        return keys(store.list_instances(ListQuery(filters=filters)).items, "id")

    assert ids(host="h2") == ["i2", "i3"]
    assert ids(segment="s2") == ["i2", "i3"]
    assert ids(segment="s1") == ["i1"]
    assert ids(project="p1") == ["i1", "i3", "i4"]
    assert ids(state="stopped") == ["i3"]
    assert ids(project="p1", segment="s2") == ["i3"]


def test_job_and_segment_filters(store: Store) -> None:
    store.create_job(Job("j1", JobKind.HOST_RECOVERY, "h1", state=JobState.DONE))
    store.create_job(Job("j2", JobKind.INSTANCE_RECOVERY, "i1"))
    store.create_job(Job("j3", JobKind.HOST_RECOVERY, "h2"))

    def ids(**filters: str) -> list[str]:
        return keys(store.list_jobs(ListQuery(filters=filters, sort="id")).items, "id")

    assert ids(kind="host_recovery") == ["j1", "j3"]
    assert ids(state="pending") == ["j2", "j3"]
    assert ids(subject="h1") == ["j1"]
    store.create_segment(Segment("on"))
    store.create_segment(Segment("off", enabled=False))
    page = store.list_segments(ListQuery(filters={"enabled": "false"}))
    assert keys(page.items, "name") == ["off"]


def test_the_jobs_project_filter_keeps_that_projects_instance_jobs(store: Store) -> None:
    """Decided by the project each instance job's data recorded when it was
    made (not today's instance of that id); a host recovery is no project's."""
    for job in (
        Job("j1", JobKind.HOST_RECOVERY, "h1", created_at=1.0,
            data=HostRecoveryData(host="h1", instances={"i1": Move(target="h2")})),
        Job("j2", JobKind.INSTANCE_RECOVERY, "i1", created_at=2.0,
            data=InstanceRecoveryData(instance="i1", host="h1", project="p1")),
        Job("j3", JobKind.ACTION, "i2", created_at=3.0,
            data=ActionData(instance="i2", action="stop", project="p2")),
        Job("j4", JobKind.DECISION, "i1", created_at=4.0,
            data=DecisionData(instance="i1", project="p1", host_job="j1")),
        Job("j5", JobKind.ACTION, "i3", created_at=5.0,
            data=ActionData(instance="i3", action="stop", project="")),
        Job("j6", JobKind.ACTION, "i1", state=JobState.DONE, created_at=6.0,
            data=ActionData(instance="i1", action="restart", project="p1")),
    ):
        store.create_job(job)

    def ids(**filters: str) -> list[str]:
        return keys(store.list_jobs(ListQuery(filters=filters)).items, "id")

    assert ids(project="p1") == ["j2", "j4", "j6"]
    assert ids(project="p2") == ["j3"]
    assert ids(project="p3") == []
    assert ids(project="p1", kind="action") == ["j6"]
    assert ids(project="p1", state="pending", subject="i1") == ["j2", "j4"]
    assert ids(project="p1", kind="host_recovery") == []
    pages = collect(store.list_jobs, ListQuery(limit=2, filters={"project": "p1"}), "id")
    assert pages == [["j2", "j4"], ["j6"]]
    newest = collect(store.list_jobs, ListQuery(limit=1, desc=True, filters={"project": "p1"}),
                     "id")
    assert newest == [["j6"], ["j4"], ["j2"]]


# -- events (outbox) -----------------------------------------------------------


def test_events_are_written_with_the_change(store: Store) -> None:
    segment(store)
    store.create_host(Host("h1", "s1"), [ev("host.created", segment="s1")])
    store.update_host(
        Host("h1", "s1", state=HostState.SUSPECT),
        [ev("host.suspect", severity="w"), ev("host.note")],
    )
    events = all_events(store)
    assert [e.type for e in events] == ["host.created", "host.suspect", "host.note"]
    assert events[0].payload == {"segment": "s1"}
    assert [e.id for e in events] == sorted({e.id for e in events})
    assert all(e.id > 0 for e in events)


def test_failed_changes_write_no_events(store: Store) -> None:
    segment(store)
    store.create_host(Host("h1", "s1"))
    before = all_events(store)
    with pytest.raises(Conflict):
        store.create_host(Host("h1", "s1"), [ev("host.created")])
    with pytest.raises(NotFound):
        store.update_host(Host("h9", "s1"), [ev("host.updated")])
    with pytest.raises(ValidationError, match="payload"):
        store.update_host(Host("h1", "s1", address="x"), [ev("host.bad", obj=object())])
    assert store.get_host("h1").address == ""
    job = store.create_job(Job("j1", JobKind.ACTION, "h1"))
    with pytest.raises(Conflict, match="generation 1, not 7"):
        store.save_job(dataclasses.replace(job, generation=8), 7, [ev("job.step")])
    assert all_events(store) == before


def test_append_events_assigns_increasing_ids(store: Store) -> None:
    first = store.append_events([ev("a.one"), ev("a.two")])
    second = store.append_events([ev("a.three", id=99)])
    ids = [e.id for e in first + second]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert first[0] == dataclasses.replace(ev("a.one"), id=ids[0])
    assert all_events(store) == first + second
    assert store.list_events(EventQuery(since=ids[0])) == first[1:] + second
    assert store.list_events(EventQuery(since=ids[0], limit=1)) == first[1:]
    assert store.append_events([]) == []


def test_event_type_subject_and_project_filters(store: Store) -> None:
    store.append_events([
        ev("instance.crashed", "i1", project="p1"),
        ev("instance.app_failed", "i2", project="p2"),
        ev("host.failed", "h1"),
        ev("instancex.other", "i1", project="p1"),
        ev("job.done", "j1"),
    ])

    def types(**kw: object) -> list[str]:
        return [e.type for e in store.list_events(EventQuery(**kw))]  # type: ignore[arg-type]

    assert types(types=["instance.*"]) == ["instance.crashed", "instance.app_failed"]
    assert types(types=["host.failed", "job.*"]) == ["host.failed", "job.done"]
    assert types(types=["host"]) == []
    assert types(types=["*"]) == types()
    assert types(subject="i1") == ["instance.crashed", "instancex.other"]
    assert types(project="p1") == ["instance.crashed", "instancex.other"]
    assert types(project="p3") == []
    assert types(project="") == ["host.failed", "job.done"]


def test_event_fields_round_trip(store: Store) -> None:
    event = Event(
        type="instance.watchdog", subject="i-1", time=1700000000.25,
        subject_kind=SubjectKind.INSTANCE, project="p1", severity=Severity.CRITICAL,
        payload={"action": "reset", "nested": {"list": [1, 2.5, None, True, "x"]}},
    )
    [stored] = store.append_events([event])
    assert stored == dataclasses.replace(event, id=stored.id)
    assert all_events(store) == [stored]


def test_bad_event_queries_are_validation_errors(store: Store) -> None:
    with pytest.raises(ValidationError):
        store.list_events(EventQuery(limit=0))
    with pytest.raises(ValidationError):
        store.list_events(EventQuery(since=-1))


# -- jobs ----------------------------------------------------------------------


def test_save_job_checks_the_generation(store: Store) -> None:
    job = store.create_job(Job("j1", JobKind.HOST_RECOVERY, "h1"), [ev("job.created")])
    step = JobStep("fence", StepState.RUNNING, 2.5)
    newer = dataclasses.replace(job, state=JobState.FENCING, generation=2, steps=(step,))
    assert store.save_job(newer, expected_generation=1, events=[ev("job.step")]) == newer
    assert store.get_job("j1") == newer
    with pytest.raises(Conflict, match="newer attempt"):
        store.save_job(dataclasses.replace(newer, reason="late"), expected_generation=1)
    assert store.get_job("j1") == newer
    assert [e.type for e in all_events(store)] == ["job.created", "job.step"]


def test_health_calls(store: Store) -> None:
    store.ping()
    assert store.schema_current() is True


def test_many_events_in_one_call_keep_their_order(store: Store) -> None:
    batch = [ev("bulk.item", f"s{n:03d}", n=n) for n in range(150)]
    stored = store.append_events(batch)
    assert [e.subject for e in stored] == [e.subject for e in batch]
    assert [e.payload for e in stored] == [{"n": n} for n in range(150)]
    assert store.list_events(EventQuery(limit=1000)) == stored


# -- registered agents -------------------------------------------------------


def test_agent_records_round_trip_replace_and_go_with_their_host(store: Store) -> None:
    from vmha.domain.agents import AgentRecord

    segment(store)
    store.create_host(Host("h1", "s1"))
    first = AgentRecord("h1", "s" * 32, "http://198.18.0.11:8792", "tok", "0.1.0", "b1", 5.5)
    assert store.save_agent(first) == first
    again = dataclasses.replace(first, boot_id="b2", registered_at=9.0)
    assert store.save_agent(again) == again
    assert store.get_agent("h1") == again
    assert store.list_agents() == [again]
    store.delete_host("h1")
    with pytest.raises(NotFound):
        store.get_agent("h1")
    assert store.list_agents() == []


def test_agent_of_an_unknown_host_is_refused(store: Store) -> None:
    from vmha.domain.agents import AgentRecord

    with pytest.raises(NotFound, match="host 'h9'"):
        store.save_agent(AgentRecord("h9", "s" * 32))


def test_agents_register_in_bulk_with_the_rules_of_one_by_one(store: Store) -> None:
    from vmha.domain.agents import AgentRecord, Registration

    segment(store)
    store.create_host(Host("h1", "s1", address="10.0.0.1", state=HostState.SUSPECT))
    store.save_agent(AgentRecord("h1", "k" * 32, version="0.1"))

    def reg(name: str, address: str, secret: str) -> Registration:
        return Registration(Host(name, "s1", address=address, capacity=Capacity(8, 1024, 10)),
                            AgentRecord(name, secret, version="0.2"))

    done = store.register_agents([reg(f"h{i}", f"10.0.0.{i}", f"{i}" * 32) for i in (1, 2, 3)])
    assert [(r.agent.host, r.agent.secret, r.created_host) for r in done] == [
        ("h1", "k" * 32, False), ("h2", "2" * 32, True), ("h3", "3" * 32, True)]
    h1 = store.get_host("h1")  # kept its state; took the agent's capacity
    assert (h1.state, h1.capacity, h1.address) == (HostState.SUSPECT, Capacity(8, 1024, 10),
                                                  "10.0.0.1")
    assert store.get_host("h3").address == "10.0.0.3"
    assert [(a.host, a.version) for a in store.list_agents()] == [
        ("h1", "0.2"), ("h2", "0.2"), ("h3", "0.2")]
    assert store.get_agent("h1").secret == "k" * 32
    bad = Registration(Host("h4", "nowhere"), AgentRecord("h4", "4" * 32))
    with pytest.raises(NotFound, match="segment 'nowhere'"):
        store.register_agents([reg("h5", "10.0.0.5", "5" * 32), bad])
    assert [h.name for h in store.list_hosts(ListQuery()).items] == ["h1", "h2", "h3"]
    assert store.register_agents([]) == []


# -- optimistic concurrency (record versions) -----------------------------------


def test_a_write_on_an_old_copy_is_refused_not_lost(store: Store) -> None:
    segment(store)
    read = store.create_host(Host("h1", "s1"))
    assert read.version == 1
    by_api = store.update_host(dataclasses.replace(read, address="10.0.0.9"))
    assert by_api.version == 2
    stale = dataclasses.replace(read, state=HostState.SUSPECT)  # made on version 1
    with pytest.raises(StaleWrite) as info:
        store.update_host(stale, [ev("host.suspect")])
    assert info.value.status == 409 and "now at version 2" in info.value.detail
    assert all_events(store) == []
    kept = store.get_host("h1")
    assert (kept.address, kept.state, kept.version) == ("10.0.0.9", HostState.UP, 2)
    rebased = store.update_host(dataclasses.replace(kept, state=HostState.SUSPECT))
    assert (rebased.address, rebased.state, rebased.version) == ("10.0.0.9",
                                                                HostState.SUSPECT, 3)
    # a record not read from the store (version 0) is written unchecked
    assert store.update_host(Host("h1", "s1", address="seed")).version == 4


def test_instances_and_jobs_are_versioned_too(store: Store) -> None:
    inst = store.create_instance(Instance("i-1", "vm", None))
    store.update_instance(dataclasses.replace(inst, name="renamed"))
    with pytest.raises(StaleWrite):
        store.update_instance(dataclasses.replace(inst, state=InstanceState.CRASHED))
    assert store.get_instance("i-1").name == "renamed"
    job = store.create_job(Job("j-1", JobKind.ACTION, "i-1"))
    assert job.version == 1
    saved = store.save_job(dataclasses.replace(job, reason="step one"), 1)
    assert saved.version == 2
    with pytest.raises(StaleWrite):  # same generation, but an older copy
        store.save_job(dataclasses.replace(job, reason="lost?"), 1)
    assert store.get_job("j-1").reason == "step one"


def test_host_versions_and_agent_hosts_tell_what_to_read_again(store: Store) -> None:
    from vmha.domain.agents import AgentRecord

    segment(store)
    for name in ("h1", "h2", "h3"):
        store.create_host(Host(name, "s1"))
    store.save_agent(AgentRecord("h2", "k" * 32))
    with warnings.catch_warnings():  # read without deprecated calls (Result.tuples)
        warnings.simplefilter("error")
        before = store.host_versions()
    assert set(before) == {"h1", "h2", "h3"}
    h1 = store.get_host("h1")
    store.update_host(dataclasses.replace(h1, address="10.0.0.1"))
    store.delete_host("h3")
    after = store.host_versions()
    assert after == {"h1": before["h1"] + 1, "h2": before["h2"]}
    got = store.get_hosts(["h1", "h3", "h9"])
    assert [(h.name, h.address, h.version) for h in got] == [("h1", "10.0.0.1", after["h1"])]
    assert store.get_hosts([]) == []
    assert store.agent_hosts() == frozenset({"h2"})


def test_agent_marks_move_when_a_secret_is_written(store: Store) -> None:
    from vmha.domain.agents import AgentRecord

    segment(store)
    for name in ("h1", "h2", "h3"):
        store.create_host(Host(name, "s1"))
    store.save_agent(AgentRecord("h1", "a" * 32))
    store.save_agent(AgentRecord("h2", "b" * 32))
    marks = store.agent_marks()
    assert set(marks) == {"h1", "h2"} and store.agent_marks() == marks
    store.update_host(dataclasses.replace(store.get_host("h1"), address="10.0.0.1"))
    assert store.agent_marks() == marks  # the host's record is not the agent's secret
    store.save_agent(AgentRecord("h2", "c" * 32))
    store.save_agent(AgentRecord("h3", "d" * 32))
    after = store.agent_marks()
    assert after["h1"] == marks["h1"] and after["h2"] != marks["h2"] and "h3" in after
    store.delete_host("h1")
    assert set(store.agent_marks()) == {"h2", "h3"}


def test_update_hosts_writes_a_batch_in_one_call_and_skips_stale_or_gone(store: Store) -> None:
    segment(store)
    store.create_segment(Segment("s2"))
    for name in ("h1", "h2", "h3", "h4"):
        store.create_host(Host(name, "s1"))
    h1, h2, h3, h4 = (store.get_host(n) for n in ("h1", "h2", "h3", "h4"))
    store.update_host(dataclasses.replace(h2, address="10.0.0.2"))  # h2's copy is now old
    store.delete_host("h3")
    since = store.last_event_id()
    got = store.update_hosts([
        (dataclasses.replace(h1, state=HostState.SUSPECT), [ev("host.suspect", "h1")]),
        (dataclasses.replace(h2, state=HostState.SUSPECT), [ev("host.suspect", "h2")]),
        (dataclasses.replace(h3, state=HostState.SUSPECT), [ev("host.suspect", "h3")]),
        (dataclasses.replace(h4, segment="s2"), [ev("host.moved", "h4")]),
        (Host("h5", "s1", state=HostState.SUSPECT), [ev("host.suspect", "h5")]),
    ])
    assert [g.name if g else None for g in got] == ["h1", None, None, None, None]
    assert got[0] is not None and got[0].state is HostState.SUSPECT
    assert got[0].version == h1.version + 1 == store.get_host("h1").version
    # the skipped ones are untouched, their events not written
    assert store.get_host("h2").state is HostState.UP
    assert store.get_host("h2").address == "10.0.0.2"
    assert store.get_host("h4").segment == "s1" and store.get_host("h4").version == h4.version
    new = store.list_events(EventQuery(since=since))
    assert [(e.type, e.subject) for e in new] == [("host.suspect", "h1")]
    assert store.update_hosts([]) == []


def test_update_hosts_writes_many_with_their_events_in_order(store: Store) -> None:
    segment(store)
    names = [f"h{n:03d}" for n in range(300)]
    for name in names:
        store.create_host(Host(name, "s1"))
    hosts = store.get_hosts(names)
    since = store.last_event_id()
    got = store.update_hosts([(dataclasses.replace(h, state=HostState.SUSPECT),
                               [ev("host.suspect", h.name)]) for h in hosts])
    assert all(g is not None and g.state is HostState.SUSPECT for g in got)
    events = store.list_events(EventQuery(since=since, limit=1000))
    assert [e.subject for e in events] == [h.name for h in hosts]
    assert all(h.state is HostState.SUSPECT for h in store.get_hosts(names))


def test_the_async_view_awaits_every_concern_with_the_stores_semantics(store: Store) -> None:
    """vmha.adapters.store.aio over this backend, in line and in threads:
    host writes (batch and one), events (written and read back), jobs,
    instances (created, changed, deleted), policies, agents, and what the
    cloud's inventory adds (segments, hosts)."""
    import asyncio

    from vmha.adapters.store.aio import InlineStore, ThreadedStore
    from vmha.domain.agents import AgentRecord

    segment(store)
    store.create_host(Host("h1", "s1"))
    store.create_host(Host("h2", "s1"))
    store.save_agent(AgentRecord("h1", "k" * 32))
    store.create_policy(NamedPolicy("gold", POLICY))
    store.create_instance(Instance("i-1", "vm1", host="h1", policy_name="gold"))

    async def use(view: Any, tag: str) -> None:
        h1 = await view.get_host("h1")
        [moved] = await view.update_hosts([(dataclasses.replace(h1, state_reason=tag),
                                            [ev("host.touched", "h1", tag=tag)])])
        assert moved.state_reason == tag and moved.version == h1.version + 1
        with pytest.raises(StaleWrite):
            await view.update_host(dataclasses.replace(h1, state_reason="old copy"))
        [event] = await view.append_events([ev("segment.note", "s1", tag=tag)])
        assert event.id > 0
        job = await view.create_job(Job(f"j-{tag}", JobKind.ACTION, "i-1"))
        saved = await view.save_job(dataclasses.replace(job, reason=tag), job.generation)
        assert (await view.get_job(job.id)).reason == tag == saved.reason
        page = await view.list_jobs(ListQuery(filters={"subject": "i-1"}))
        assert f"j-{tag}" in keys(page.items, "id")
        with pytest.raises(NotFound):
            await view.get_job("nope")
        inst = await view.get_instance("i-1")
        inst = await view.update_instance(dataclasses.replace(inst, name=f"vm-{tag}"))
        assert keys((await view.list_instances(ListQuery())).items, "name") == [f"vm-{tag}"]
        assert (await view.get_policy("gold")).policy == POLICY
        assert await view.agent_hosts() == frozenset({"h1"})
        assert set(await view.agent_marks()) == {"h1"}
        assert [e.id for e in await view.list_events(
            EventQuery(types=["segment.note"], subject="s1"))][-1] == event.id
        await view.create_segment(Segment(f"s-{tag}"))
        with pytest.raises(Conflict):
            await view.create_segment(Segment(f"s-{tag}"))
        await view.create_host(Host(f"h-{tag}", f"s-{tag}"))
        assert f"s-{tag}" in keys((await view.list_segments(ListQuery())).items, "name")
        assert [h.segment for h in await view.get_hosts([f"h-{tag}"])] == [f"s-{tag}"]
        await view.create_instance(Instance(f"i-{tag}", "new", host=f"h-{tag}"))
        assert (await view.get_instance(f"i-{tag}")).host == f"h-{tag}"
        await view.delete_instance(f"i-{tag}")
        with pytest.raises(NotFound):
            await view.delete_instance(f"i-{tag}")

    asyncio.run(use(InlineStore(store), "inline"))
    asyncio.run(use(ThreadedStore(store), "threaded"))
    touched = store.list_events(EventQuery(types=["host.touched"]))
    assert [e.payload["tag"] for e in touched] == ["inline", "threaded"]
