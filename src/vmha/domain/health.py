"""Confirmation of a suspect host: the evidence that makes it `failed`.

Called by the engine after a confirmation round (peer probes and a BMC power
read run concurrently). Pure: no I/O, no clock.

Rules (DESIGN.md rule 2, "Suspect != failed"):
- The BMC says power is OFF            -> failed (the fence is half done).
- Any asked peer reaches the host      -> partitioned: the host is alive and
  only the controller's path is broken; alert, never fence.
- A quorum of peers cannot reach it    -> failed. Quorum = a majority of the
  peers asked, and at least 2 when the segment has 2 or more peers.
- Otherwise (too few peers answered)  -> inconclusive: stays suspect, the
  engine asks again later.
When the BMC could not be reached, a `failed` verdict says so
(`bmc_unreachable`): power fencing will fail too, so the host can only be
declared fenced by the self-fence path (agent watchdog) or an operator ack.

A host alone in its segment (no peers): only the BMC's word counts. If the
BMC cannot be reached either, the host stays suspect until an operator acts.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class PowerReading(str, enum.Enum):
    """What the BMC said during a confirmation round."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"  # answered, but could not tell
    UNREACHABLE = "unreachable"  # did not answer in time
    NOT_ASKED = "not_asked"  # the host has no power fence level


class Verdict(str, enum.Enum):
    FAILED = "failed"
    PARTITIONED = "partitioned"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Evidence:
    """One confirmation round for a suspect host.

    `peer_votes`: one entry per peer asked: True = reached the host,
    False = could not, None = the peer itself did not answer.
    `peers_in_segment`: peers that could have been asked (other hosts of the
    segment that are up).
    """

    power: PowerReading = PowerReading.NOT_ASKED
    peer_votes: Sequence[bool | None] = ()
    peers_in_segment: int = 0


@dataclass(frozen=True)
class Confirmation:
    verdict: Verdict
    reason: str
    bmc_unreachable: bool = False


def peer_quorum(asked: int, peers_in_segment: int) -> int:
    """Votes needed: majority of those asked, at least 2 when available."""
    majority = asked // 2 + 1
    return max(majority, min(2, peers_in_segment))


def confirm(evidence: Evidence) -> Confirmation:
    """Decide what the evidence proves about a suspect host."""
    if evidence.power is PowerReading.OFF:
        return Confirmation(Verdict.FAILED, "BMC reports power off")
    votes = list(evidence.peer_votes)
    reached = sum(1 for v in votes if v is True)
    missed = sum(1 for v in votes if v is False)
    if reached:
        return Confirmation(
            Verdict.PARTITIONED,
            f"controller cannot reach it but {reached} of {len(votes)} peers can",
        )
    if not votes:
        return Confirmation(Verdict.INCONCLUSIVE, _no_peer_reason(evidence.power))
    need = peer_quorum(len(votes), evidence.peers_in_segment)
    if missed < need:
        return Confirmation(
            Verdict.INCONCLUSIVE,
            f"only {missed} of {len(votes)} peers answered that it is unreachable; "
            f"{need} needed",
        )
    unreachable = evidence.power is PowerReading.UNREACHABLE
    reason = f"no heartbeats and {missed} of {len(votes)} peers cannot reach it"
    if unreachable:
        reason += "; BMC unreachable, only self-fence or operator ack can fence it"
    return Confirmation(Verdict.FAILED, reason, bmc_unreachable=unreachable)


def _no_peer_reason(power: PowerReading) -> str:
    if power is PowerReading.ON:
        return "no peer can vouch and the BMC reports power on"
    if power is PowerReading.UNREACHABLE:
        return "no peer can vouch and the BMC is unreachable; waiting for an operator"
    return "no peer can vouch and no BMC evidence"
