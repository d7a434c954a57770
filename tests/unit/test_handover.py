"""A leader that hears no host hands leadership to one that does
(vmha.domain.handover): who is deaf, who hears, the leader's hold-down and
a follower's abstention, as tables of named cases."""

from __future__ import annotations

import pytest

from vmha.domain.handover import HOLD_S, Hearing, HoldDown, abstains, better


@pytest.mark.parametrize(("hears", "hosts", "deaf", "hearing"), [
    (0, 24, True, False),
    (2, 24, True, False),       # almost none: at most a tenth
    (3, 24, False, False),      # neither: no handover either way
    (12, 24, False, True),      # half
    (24, 24, False, True),
    (0, 0, False, False),       # no host registered: nothing to hear
])
def test_deaf_and_hearing_never_overlap(hears: int, hosts: int, deaf: bool,
                                        hearing: bool) -> None:
    h = Hearing("c1", hears, hosts)
    assert (h.deaf, h.hearing) == (deaf, hearing)


@pytest.mark.parametrize(("own", "others", "expected"), [
    pytest.param(Hearing("c1", 0, 24), [Hearing("c2", 24, 24)], "c2", id="cut-off-leader"),
    pytest.param(Hearing("c1", 0, 24), [Hearing("c2", 0, 24), Hearing("c3", 0, 24)], None,
                 id="hosts-really-all-dead"),
    pytest.param(Hearing("c1", 0, 24), [], None, id="alone"),
    pytest.param(Hearing("c1", 20, 24), [Hearing("c2", 24, 24)], None, id="it-hears-them"),
    pytest.param(Hearing("c1", 0, 24), [Hearing("c2", 11, 24)], None, id="other-hears-too-few"),
    pytest.param(Hearing("c1", 0, 24), [Hearing("c2", 13, 24), Hearing("c3", 20, 24)], "c3",
                 id="the-one-that-hears-most"),
    pytest.param(Hearing("c1", 0, 24), [Hearing("c1", 24, 24)], None, id="not-itself"),
])
def test_better(own: Hearing, others: list[Hearing], expected: str | None) -> None:
    found = better(own, others)
    assert (found.name if found else None) == expected
    assert abstains(own, others) is (expected is not None)


def test_the_leader_resigns_after_a_hold_down_without_a_break() -> None:
    hold = HoldDown()
    deaf, heard = Hearing("c1", 0, 24), [Hearing("c2", 24, 24, at=1000.0)]
    first = hold.observe(deaf, heard, 100.0)
    assert first.started and not first.resign
    assert "it hears 0 of 24 hosts while c2 hears 24 of 24 hosts" in first.reason
    assert not hold.observe(deaf, heard, 100.0 + HOLD_S - 0.1).resign
    # it hears the hosts again for a moment: the hold-down starts over
    assert hold.observe(Hearing("c1", 24, 24), heard, 100.0 + HOLD_S) == hold.observe(
        Hearing("c1", 24, 24), heard, 100.0 + HOLD_S)
    again = hold.observe(deaf, heard, 101.0 + HOLD_S)
    assert again.started and not again.resign
    assert not hold.observe(deaf, heard, 100.5 + 2 * HOLD_S).resign
    done = hold.observe(deaf, heard, 101.0 + 2 * HOLD_S)
    assert done.resign and "for 5.0 s" in done.reason


def test_no_resignation_while_nobody_else_hears_the_hosts() -> None:
    """All hosts really dead: every controller hears none; the leader stays."""
    hold = HoldDown()
    dead = [Hearing("c2", 0, 24), Hearing("c3", 1, 24)]
    for t in range(60):
        decision = hold.observe(Hearing("c1", 0, 24), dead, float(t))
        assert not decision.started and not decision.resign
    # the follower that heard them goes silent during the hold-down: it stops
    hold.observe(Hearing("c1", 0, 24), [Hearing("c2", 24, 24, at=100.0)], 100.0)
    hold.observe(Hearing("c1", 0, 24), dead, 102.0)
    assert not hold.observe(Hearing("c1", 0, 24), [Hearing("c2", 24, 24, at=106.0)],
                            106.0).resign


def test_a_report_not_renewed_since_the_hold_down_began_makes_no_one_resign() -> None:
    """A follower whose judging stalled keeps its last word ("I hear them")
    until it goes stale: it must not carry a resignation on its own."""
    hold, deaf = HoldDown(), Hearing("c1", 0, 24)
    assert hold.observe(deaf, [Hearing("c2", 24, 24, at=99.0)], 100.0).started
    assert not hold.observe(deaf, [Hearing("c2", 24, 24, at=99.0)], 100.0 + HOLD_S + 1).resign
    assert not hold.observe(deaf, [Hearing("c2", 24, 24, at=100.0)], 100.0 + HOLD_S + 1).resign
    assert hold.observe(deaf, [Hearing("c2", 24, 24, at=102.0)], 100.0 + HOLD_S + 1).resign
