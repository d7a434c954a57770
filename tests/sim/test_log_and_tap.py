"""The log line format and the store tap that feeds it."""

from __future__ import annotations

import pytest

from vmha.adapters.store.fake import FakeStore
from vmha.domain.model import Event, Host, Segment
from vmha.errors import Conflict
from vmha.ports import EventQuery
from vmha.sim.log import SimLog
from vmha.sim.tap import StoreTap


def test_lines_are_time_sorted_with_ms_and_stable_for_ties() -> None:
    now = [12.4]
    log = SimLog(lambda: now[0], start=2.0)
    log.world("h1", "powered off (power cut)")
    log.event(Event("host.suspect", "h1", 10.0, payload={"reason": "no heartbeat for 2.4 s"}))
    log.inject("h1", "power-off")
    now[0] = 1002.0
    log.event(Event("controller.isolated", "controller", 1002.0))
    assert log.render() == [
        "   8.000  h1: host.suspect no heartbeat for 2.4 s",
        "  10.400  h1: world powered off (power cut)",
        "  10.400  h1: inject power-off",
        "1000.000  controller: controller.isolated",
    ]
    assert log.events_json()[0] == {"t": 8.0, "type": "host.suspect", "subject": "h1",
                                    "reason": "no heartbeat for 2.4 s"}


def test_the_tap_reports_stored_events_only() -> None:
    seen: list[str] = []
    store = FakeStore()
    tap = StoreTap(store, lambda events: seen.extend(e.type for e in events))
    tap.create_segment(Segment("s1"))
    tap.create_host(Host("h1", "s1"), [Event("host.created", "h1", 1.0)])
    tap.update_host(Host("h1", "s1"), events=[Event("host.suspect", "h1", 2.0)])
    tap.append_events([Event("controller.isolated", "controller", 3.0)])
    with pytest.raises(Conflict):
        tap.create_host(Host("h1", "s1"), [Event("host.created", "h1", 4.0)])
    assert tap.get_host("h1").name == "h1"
    assert seen == ["host.created", "host.suspect", "controller.isolated"]
    assert len(store.list_events(EventQuery())) == 3
