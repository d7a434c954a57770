"""The cut-off rule the agent and the controller share (vmha.domain.isolation):
a table of samples folded into a window, checked against the agent's own
monitor so the two cannot drift apart."""

from __future__ import annotations

import pytest

from vmha.agent.isolation import IsolationMonitor
from vmha.domain.isolation import (
    CutOffWindow,
    Sample,
    contact_until,
    majority,
    observe,
    peers_needed,
    proven,
)

GAP = 4.0
DEADLINE = 20.0


@pytest.mark.parametrize(("peers", "need"), [(0, 0), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3),
                                             (6, 3), (9, 5)])
def test_peers_needed_is_a_majority_counting_the_host_itself(peers: int, need: int) -> None:
    assert peers_needed(peers) == need
    if peers:
        assert 2 * (need + 1) > peers + 1 and not 2 * need > peers + 1
        assert majority(peers, need) and not majority(peers, need - 1)
    assert not majority(0, 0)


@pytest.mark.parametrize("peers", [1, 2, 3, 4, 5, 6])
def test_the_agent_monitor_and_the_shared_rule_agree(peers: int) -> None:
    names = [f"p{i}" for i in range(peers)]
    for reached in range(peers + 1):
        mon = IsolationMonitor(names, window_s=3.0, timeout_s=10.0, action="reboot",
                               started_at=-100.0)
        for name in names[:reached]:
            mon.peer_contact(name, 50.0)
        in_contact = mon.evaluate(51.0).in_contact
        assert in_contact == majority(peers, reached), (peers, reached)
        assert mon.contact_until() == contact_until(-100.0, [50.0] * reached, peers, 3.0)
        # the controller's view of the same moment: the peers not reached say so
        sample = Sample(51.0, peers, cannot_reach=peers - reached)
        assert sample.cut_off == (not in_contact), (peers, reached)


@pytest.mark.parametrize(("sample", "cut_off"), [
    (Sample(1.0, 2, cannot_reach=2), True),
    (Sample(1.0, 2, cannot_reach=1), False),  # the other one may reach it
    (Sample(1.0, 2, reach=1, cannot_reach=1), False),
    (Sample(1.0, 4, cannot_reach=2), False),  # two unknown peers are a majority with it
    (Sample(1.0, 4, cannot_reach=3), True),
    (Sample(1.0, 4, cannot_reach=4, heard=True), False),  # a heartbeat is contact
    (Sample(1.0, 0), True),  # no peers: only the controller counts
    (Sample(1.0, 0, heard=True), False),
])
def test_a_sample_shows_cut_off_only_when_no_majority_is_possible(sample: Sample,
                                                                   cut_off: bool) -> None:
    assert sample.cut_off is cut_off
    assert (sample.why_not() == "") is cut_off


def _run(window: CutOffWindow, samples: list[Sample]) -> CutOffWindow:
    for s in samples:
        window = observe(window, s, GAP)
    return window


def _cut(at: float) -> Sample:
    return Sample(at, 2, cannot_reach=2)


def test_an_unbroken_chain_from_the_last_heartbeat_proves_the_deadline() -> None:
    start = CutOffWindow.starting(10.0)
    window = _run(start, [_cut(t) for t in (12.0, 14.5, 17.0, 19.5, 22.0, 24.5, 27.0, 29.5)])
    assert window.since == 10.0 and not proven(window, DEADLINE)
    window = observe(window, _cut(32.0), GAP)
    assert proven(window, DEADLINE) and window.samples == 9


def test_two_samples_around_a_contact_are_not_proof() -> None:
    """The gap the property test found: cut off when failed and at the
    deadline, but a peer reached it in between."""
    start = CutOffWindow.starting(10.0)
    window = _run(start, [_cut(12.0), _cut(14.0), Sample(16.0, 2, reach=1), _cut(18.0)])
    assert window.since == 16.0 and window.samples == 1
    assert not proven(_run(window, [_cut(31.0)]), DEADLINE)  # and a gap restarts it too
    window = _run(window, [_cut(18.0 + 2 * k) for k in range(1, 10)])
    assert proven(window, DEADLINE) and window.since == 16.0


def test_a_gap_between_samples_restarts_the_window() -> None:
    window = _run(CutOffWindow.starting(10.0), [_cut(25.0)])  # 15 s after the last heartbeat
    assert window.since == 25.0 and window.samples == 1
    window = _run(window, [_cut(27.0), _cut(29.0), _cut(40.0)])
    assert window.since == 40.0
    assert not proven(_run(window, [_cut(44.0), _cut(48.0), _cut(52.0), _cut(56.0)]),
                      DEADLINE)


def test_an_unanswered_peer_breaks_the_chain_like_a_contact() -> None:
    window = _run(CutOffWindow.starting(0.0), [_cut(2.0), Sample(4.0, 2, cannot_reach=1)])
    assert window.since == 4.0 and window.samples == 0


def test_a_row_of_an_older_vmha_has_no_window_and_starts_one_at_its_first_sample() -> None:
    old = CutOffWindow.from_storage(None)
    assert old == CutOffWindow()
    window = observe(old, _cut(500.0), GAP)
    assert window.since == 500.0 and not proven(window, DEADLINE)
    assert CutOffWindow.from_storage(window.to_storage()) == window
