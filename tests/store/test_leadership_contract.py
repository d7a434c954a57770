"""The leader epoch (the fencing token of issue 15), on every backend.

A controller that becomes leader claims a new epoch and writes through
`store.fenced(epoch)`; once another controller claimed, the old view's
writes to jobs, hosts and instances are refused with NotLeader and leave
nothing behind (no row, no event), while other writers are unaffected.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from vmha.domain.errors import Conflict, NotFound, NotLeader
from vmha.domain.model import Event, Host, HostState, Instance, Job, JobKind, Segment
from vmha.ports import EventQuery, Store


def ev(subject: str) -> Event:
    return Event(type="test.written", subject=subject, time=1.0)


def test_claims_make_ever_higher_epochs(store: Store) -> None:
    assert store.leadership().epoch == 0
    first = store.claim_leadership("c1", 10.0)
    second = store.claim_leadership("c2", 11.0)
    assert 0 < first < second
    now = store.leadership()
    assert (now.holder, now.epoch, now.since) == ("c2", second, 11.0)


def test_the_current_leader_writes_and_a_superseded_one_cannot(store: Store) -> None:
    store.create_segment(Segment("s1"))
    store.create_host(Host("h1", "s1"))
    old = store.fenced(store.claim_leadership("c1", 1.0))
    job = old.create_job(Job("j-1", JobKind.HOST_RECOVERY, "h1"), [ev("j-1")])
    old.update_host(dataclasses.replace(store.get_host("h1"), state=HostState.SUSPECT))

    new = store.fenced(store.claim_leadership("c2", 2.0))
    events_before = len(store.list_events(EventQuery(limit=1000)))
    with pytest.raises(NotLeader, match="epoch 1"):
        old.save_job(dataclasses.replace(job, reason="late"), job.generation, [ev("late")])
    with pytest.raises(NotLeader):
        old.create_job(Job("j-2", JobKind.HOST_RECOVERY, "h1"))
    with pytest.raises(NotLeader):
        old.update_host(dataclasses.replace(store.get_host("h1"), state=HostState.FAILED))
    with pytest.raises(NotLeader):
        old.create_instance(Instance("i-1", "vm1", "h1"))
    assert isinstance(NotLeader("x"), Conflict)  # the job runner leaves the job on it
    assert store.get_job("j-1").reason == job.reason
    assert store.get_host("h1").state is HostState.SUSPECT
    assert len(store.list_events(EventQuery(limit=1000))) == events_before

    # the new leader carries on from the last durable step; other writers are free
    new.save_job(dataclasses.replace(job, reason="taken over"), job.generation)
    assert store.get_job("j-1").reason == "taken over"
    old.create_segment(Segment("s2"))  # not a leader's table: not fenced
    store.update_host(dataclasses.replace(store.get_host("h1"), state=HostState.FAILED))


def test_a_write_racing_a_claim_either_lands_before_it_or_not_at_all(store: Store) -> None:
    """Many fenced writes from one thread while another claims: every write
    that succeeded committed before the claim that superseded it."""
    store.create_segment(Segment("s1"))
    store.create_host(Host("h1", "s1"))
    epoch = store.claim_leadership("c1", 1.0)
    old = store.fenced(epoch)
    landed: list[int] = []
    refused: list[int] = []
    go = threading.Event()

    def writer() -> None:
        go.wait()
        for n in range(100_000):  # until refused a few times
            if len(refused) >= 5:
                return
            try:
                old.create_job(Job(f"j-{n}", JobKind.HOST_RECOVERY, "h1"))
                landed.append(n)
            except NotLeader:
                refused.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    go.set()
    while not landed and thread.is_alive():
        time.sleep(0.001)
    new_epoch = store.claim_leadership("c2", 2.0)
    thread.join()
    assert new_epoch == epoch + 1
    assert refused, "no write came after the claim"
    assert landed == list(range(len(landed)))  # once refused, never accepted again
    for n in landed:
        assert store.get_job(f"j-{n}").id == f"j-{n}"
    for n in refused:
        with pytest.raises(NotFound):  # nothing was written
            store.get_job(f"j-{n}")
