"""Domain model: validation and the host/job state machines."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmha.domain.errors import InvalidTransition, ValidationError
from vmha.domain.model import (
    HOST_TRANSITIONS,
    NAME_PATTERN,
    Capacity,
    Host,
    HostState,
    Job,
    JobKind,
    JobState,
    Segment,
    check_name,
)
from vmha.domain.transitions import finish_step, start_step, transition_host, transition_job


def test_host_transition_records_reason_and_emits_event() -> None:
    host = Host("h1", "s1")
    new, event = transition_host(host, HostState.SUSPECT, "no heartbeat for 2.4 s", now=12.5)
    assert new.state is HostState.SUSPECT
    assert new.state_reason == "no heartbeat for 2.4 s"
    assert new.state_since == 12.5
    assert event.type == "host.suspect"
    assert event.subject == "h1"
    assert event.payload["from"] == "up" and event.payload["to"] == "suspect"
    assert event.severity.value == "warning"


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (HostState.UP, HostState.FAILED),  # suspect first (DESIGN rule 2)
        (HostState.UP, HostState.FENCED),
        (HostState.SUSPECT, HostState.FENCED),  # never fenced without fencing
        (HostState.FAILED, HostState.RECOVERING),  # no recovery without a fence
        (HostState.PARTITIONED, HostState.FENCING),  # partitioned: no fencing
    ],
)
def test_forbidden_host_transitions(start: HostState, to: HostState) -> None:
    host = Host("h1", "s1", state=start)
    with pytest.raises(InvalidTransition, match=f"from '{start.value}' to '{to.value}'"):
        transition_host(host, to, "test", now=0.0)


def test_every_state_can_enter_maintenance_and_leave_to_up() -> None:
    for state in HostState:
        if state is HostState.MAINTENANCE:
            continue
        assert HostState.MAINTENANCE in HOST_TRANSITIONS[state], state
    host = Host("h1", "s1", state=HostState.MAINTENANCE)
    new, event = transition_host(host, HostState.UP, "operator", now=1.0)
    assert (new.state, event.type) == (HostState.UP, "host.maintenance_off")
    _, event = transition_host(new, HostState.MAINTENANCE, "operator", now=2.0)
    assert event.type == "host.maintenance_on"


def test_job_transitions_bump_generation_and_terminal_states_are_final() -> None:
    job = Job("j1", JobKind.HOST_RECOVERY, "h1")
    fencing, event = transition_job(job, JobState.FENCING, "host failed", now=1.0)
    assert fencing.generation == job.generation + 1
    assert event.type == "job.step"
    failed, event = transition_job(fencing, JobState.FAILED, "gave up", now=2.0)
    assert event.type == "job.failed"
    with pytest.raises(InvalidTransition):
        transition_job(failed, JobState.PENDING, "again", now=3.0)


def test_job_steps_are_recorded_with_timings() -> None:
    job = start_step(Job("j1", JobKind.HOST_RECOVERY, "h1"), "fence:ipmi", now=1.0)
    job = finish_step(job, "fence:ipmi", now=2.5, ok=False, detail="BMC timeout")
    (step,) = job.steps
    assert (step.state, step.started_at, step.finished_at) == ("failed", 1.0, 2.5)
    with pytest.raises(InvalidTransition):
        finish_step(job, "fence:ipmi", now=3.0)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Segment("bad name"), "name"),
        (lambda: Segment("s1", mass_failure_threshold=0), "mass_failure_threshold"),
        (lambda: Host("h1", "s1", fence_levels=(("ipmii",),)), "fence_levels"),
        (lambda: Capacity(vcpus=-1), "vcpus"),
        (lambda: Host("", "s1"), "name"),
    ],
)
def test_validation_names_the_field(build: object, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()  # type: ignore[operator]
    assert info.value.field == field


def test_capacity_fit_and_subtract() -> None:
    free = Capacity(vcpus=4, ram_mb=8192, disk_gb=40)
    need = Capacity(vcpus=2, ram_mb=4096, disk_gb=10)
    assert free.fits(need)
    assert not free.minus(need).minus(need).fits(Capacity(vcpus=1))


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ09-_.é/ \x00"), max_size=70))
def test_name_pattern_is_check_name(value: str) -> None:
    """The OpenAPI pattern and the server's check agree on every name."""
    try:
        check_name("name", value)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (re.fullmatch(NAME_PATTERN, value) is not None), value


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_names_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="not a usable name"):
        check_name("name", value)
    check_name("name", "...")  # an ordinary name
