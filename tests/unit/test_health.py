"""Confirmation: which evidence makes a suspect host failed or partitioned."""

from __future__ import annotations

import pytest

from vmha.domain.health import Evidence, PowerReading, Verdict, confirm, peer_quorum

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
