"""Confirmation: which evidence makes a suspect host failed or partitioned."""

from __future__ import annotations

import pytest

from vmha.domain.health import (
    Evidence,
    Look,
    Move,
    PowerReading,
    Verdict,
    after_round,
    confirm,
    judge,
    peer_quorum,
)
from vmha.domain.model import HostState

P = PowerReading
CASES = [
    # name, power, votes, peers in segment, verdict, bmc_unreachable
    ("bmc says off, no peers", P.OFF, (), 0, Verdict.FAILED, False),
    ("bmc says off beats a reaching peer", P.OFF, (True,), 1, Verdict.FAILED, False),
    ("all peers miss it, bmc on", P.ON, (False, False, False), 5, Verdict.FAILED, False),
    ("2 of 3 miss, one silent", P.ON, (False, False, None), 3, Verdict.FAILED, False),
    ("one peer reaches it: partitioned", P.ON, (False, True, False), 3,
     Verdict.PARTITIONED, False),
    ("all peers reach it: partitioned", P.UNREACHABLE, (True, True), 2,
     Verdict.PARTITIONED, False),
    ("one of 3 misses, others silent", P.ON, (False, None, None), 3,
     Verdict.INCONCLUSIVE, False),
    ("single peer in segment is enough", P.NOT_ASKED, (False,), 1, Verdict.FAILED, False),
    ("one vote is not enough when two peers exist", P.ON, (False,), 2,
     Verdict.INCONCLUSIVE, False),
    ("bmc unreachable and peers miss it: self-fence only", P.UNREACHABLE, (False, False), 2,
     Verdict.FAILED, True),
    ("no peers, bmc on", P.ON, (), 0, Verdict.INCONCLUSIVE, False),
    ("no peers, bmc unreachable", P.UNREACHABLE, (), 0, Verdict.INCONCLUSIVE, False),
    ("no peers, no bmc", P.NOT_ASKED, (), 0, Verdict.INCONCLUSIVE, False),
    ("peers all silent", P.ON, (None, None, None), 3, Verdict.INCONCLUSIVE, False),
]


@pytest.mark.parametrize(("name", "power", "votes", "peers", "verdict", "unreachable"), CASES,
                         ids=[c[0] for c in CASES])
def test_confirmation(name: str, power: PowerReading, votes: tuple[bool | None, ...],
                      peers: int, verdict: Verdict, unreachable: bool) -> None:
    result = confirm(Evidence(power, votes, peers))
    assert result.verdict is verdict
    assert result.bmc_unreachable is unreachable
    assert result.reason


def test_quorum_is_a_majority_and_at_least_two_when_possible() -> None:
    assert peer_quorum(3, 5) == 2
    assert peer_quorum(5, 5) == 3
    assert peer_quorum(1, 1) == 1
    assert peer_quorum(1, 4) == 2


def test_rounds_back_off_when_many_hosts_are_suspect() -> None:
    from vmha.domain.health import next_round_in

    assert [next_round_in(2.0, n, 25) for n in (0, 1, 25, 50, 1000)] == [2.0, 2.0, 2.0, 4.0,
                                                                          80.0]


def test_peers_are_the_first_usable_ones_and_counted_just_enough() -> None:
    from vmha.domain.health import pick_peers

    ring = [f"h{i}" for i in range(10)]
    down = {"h1", "h2", "h4"}
    looked: list[str] = []

    def usable(name: str) -> bool:
        looked.append(name)
        return name not in down

    assert pick_peers(ring, "h3", 3, usable, 100) == (["h0", "h5", "h6"], 4)
    assert looked == ["h0", "h1", "h2", "h4", "h5", "h6", "h7"]  # no more than needed
    assert pick_peers(ring[:4], "h3", 3, usable, 100) == (["h0"], 1)  # every usable peer
    assert pick_peers(ring, "h3", 3, usable, 5) == (["h0"], 4)  # cut short: strictest quorum
    assert pick_peers(["h1"], "h1", 3, usable, 100) == ([], 0)
    assert pick_peers([], "h1", 3, usable, 100) == ([], 0)


# -- between rounds: what a tick's evidence calls for -------------------------------

UP, SUSPECT, PARTITIONED = HostState.UP, HostState.SUSPECT, HostState.PARTITIONED
RECOVERED, FAILED = HostState.RECOVERED, HostState.FAILED


@pytest.mark.parametrize(("name", "look", "move"), [
    ("up and heard", Look(UP, heard=True), Move.NONE),
    ("up and silent", Look(UP, silent=True, heard=True), Move.SUSPECT),
    ("up, never heard, silent", Look(UP, silent=True), Move.SUSPECT),
    ("maintenance flag: nothing", Look(UP, maintenance=True, silent=True), Move.NONE),
    ("maintenance state: nothing", Look(HostState.MAINTENANCE, silent=True), Move.NONE),
    ("suspect, heard again", Look(SUSPECT, heard=True), Move.RESUMED),
    ("partitioned, heard again", Look(PARTITIONED, heard=True), Move.RESUMED),
    ("suspect, quiet but never heard", Look(SUSPECT), Move.CONFIRM),
    ("suspect and silent", Look(SUSPECT, silent=True, heard=True), Move.CONFIRM),
    ("partitioned and silent", Look(PARTITIONED, silent=True, heard=True), Move.CONFIRM),
    ("failed: the job's, not the detector's", Look(FAILED, heard=True), Move.NONE),
    ("recovered, not healthy long enough", Look(RECOVERED, heard=True), Move.NONE),
    ("recovered and healthy", Look(RECOVERED, heard=True, healthy_long_enough=True),
     Move.RETURN),
    ("recovered, healthy, segment holds", Look(RECOVERED, heard=True, healthy_long_enough=True,
                                               segment_holds=True), Move.HOLD),
    ("recovered, healthy, held already", Look(RECOVERED, heard=True, healthy_long_enough=True,
                                              segment_holds=True, held=True), Move.NONE),
])
def test_judge(name: str, look: Look, move: Move) -> None:
    assert judge(look) is move, name


@pytest.mark.parametrize(("state", "verdict", "to"), [
    (SUSPECT, Verdict.FAILED, FAILED),
    (PARTITIONED, Verdict.FAILED, None),  # peers reached it: one failed round is not enough
    (SUSPECT, Verdict.PARTITIONED, PARTITIONED),
    (PARTITIONED, Verdict.PARTITIONED, None),
    (SUSPECT, Verdict.INCONCLUSIVE, None),
    (PARTITIONED, Verdict.INCONCLUSIVE, None),
])
def test_after_round(state: HostState, verdict: Verdict, to: HostState | None) -> None:
    assert after_round(state, verdict) is to


def test_a_partitioned_host_fails_on_the_second_failed_round_in_a_row_or_a_bmc_off() -> None:
    assert after_round(PARTITIONED, Verdict.FAILED, failed_in_a_row=2) is FAILED
    assert after_round(PARTITIONED, Verdict.FAILED, power_off=True) is FAILED
    assert after_round(SUSPECT, Verdict.FAILED, failed_in_a_row=1) is FAILED
