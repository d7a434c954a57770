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

Pacing (issue 18): `pick_peers` chooses whom to ask without sorting the
segment per suspect or looking at every host; `next_round_in` backs rounds
off when many hosts are suspect at once.

Between rounds (issue 13: host health as domain logic), `judge` says what
the detector's evidence means for a host on a tick (suspect it, bring it
back up, confirm it, let it return after recovery) and `after_round` which
state a round's verdict moves it to; the engine feeds them and applies the
answer (vmha.engine.detection), pacing the rounds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vmha.domain.model import HostState

TROUBLE = (HostState.SUSPECT, HostState.PARTITIONED)


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
    segment that are up). `asked`: the peers, in the order of `peer_votes`
    (when the caller needs to know who answered).
    """

    power: PowerReading = PowerReading.NOT_ASKED
    peer_votes: Sequence[bool | None] = ()
    peers_in_segment: int = 0
    asked: Sequence[str] = ()


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


def next_round_in(base_s: float, suspects: int, rounds_per_base: int) -> float:
    """Seconds until a suspect host's next confirmation round: `base_s`,
    stretched so that all `suspects` together start at most
    `rounds_per_base` rounds per `base_s` (issue 18: when thousands of
    hosts look down at once — most likely the controller's own trouble,
    and the guard pauses recovery anyway — rounds back off instead of
    swamping peers, BMCs and the controller)."""
    return base_s * max(1.0, suspects / max(1, rounds_per_base))


def pick_peers(ring: Sequence[str], target: str, want: int,
               usable: Callable[[str], bool], scan_max: int) -> tuple[list[str], int]:
    """The first `want` usable peers of `target` in `ring` (the segment's
    hosts, sorted: built once per change of the segment, not per round),
    and how many usable peers there are, counted only up to `want + 1`:
    enough for `peer_quorum`, which needs to know whether there are at
    least two. At most `scan_max` hosts are looked at (most hosts down at
    once must not make every round O(hosts)); a scan cut short counts as
    `want + 1` peers, which keeps the quorum at its strictest."""
    found: list[str] = []
    for i, name in enumerate(ring):
        if i >= scan_max:
            return found[:want], want + 1
        if name != target and usable(name):
            found.append(name)
            if len(found) > want:
                break
    return found[:want], len(found)


class Move(str, enum.Enum):
    """What a tick's look at one host calls for."""

    NONE = "none"
    SUSPECT = "suspect"  # up and silent: suspect, a confirmation round at once
    RESUMED = "resumed"  # suspect or partitioned and heard again: up
    CONFIRM = "confirm"  # suspect or partitioned and still silent: a round when due
    RETURN = "return"  # recovered, healthy long enough: up again, back into the cloud
    HOLD = "hold"  # recovered, healthy long enough, its segment holds it for an operator


@dataclass(frozen=True)
class Look:
    """The evidence about one host on one tick.

    `silent`: the detector finds its heartbeats missing; `heard`: a real
    heartbeat arrived since this controller started (a host never heard is
    not brought back up by a quiet detector); `healthy_long_enough`:
    heartbeats healthy for the return period; `segment_holds`: its segment
    holds recovered hosts for an operator; `held`: it is held already."""

    state: HostState
    maintenance: bool = False
    silent: bool = False
    heard: bool = False
    healthy_long_enough: bool = False
    segment_holds: bool = False
    held: bool = False


def judge(look: Look) -> Move:
    """What the evidence calls for (DESIGN.md rule 2: suspect is not failed;
    rule 7: a recovered host is not forgotten). Maintenance: nothing."""
    if look.maintenance or look.state is HostState.MAINTENANCE:
        return Move.NONE
    if look.state is HostState.UP:
        return Move.SUSPECT if look.silent else Move.NONE
    if look.state in TROUBLE:
        return Move.RESUMED if not look.silent and look.heard else Move.CONFIRM
    if look.state is HostState.RECOVERED and look.healthy_long_enough:
        if not look.segment_holds:
            return Move.RETURN
        return Move.NONE if look.held else Move.HOLD
    return Move.NONE


# Failed rounds in a row a partitioned host needs (its BMC reading off aside):
# peers reached it, so one round in which none does may be a lost probe on
# a lossy link rather than its death (the property test found a host whose
# only peer was lossy failed by one such round, and fenced while it ran).
PARTITIONED_FAILED_ROUNDS = 2


def after_round(state: HostState, verdict: Verdict, failed_in_a_row: int = 1,
                power_off: bool = False) -> HostState | None:
    """The state a confirmation round's verdict moves a suspect or
    partitioned host to; None: it stays (inconclusive, or partitioned again,
    or a partitioned host's first failed round: see PARTITIONED_FAILED_ROUNDS)."""
    if verdict is Verdict.FAILED:
        if (state is HostState.PARTITIONED and not power_off
                and failed_in_a_row < PARTITIONED_FAILED_ROUNDS):
            return None
        return HostState.FAILED
    if verdict is Verdict.PARTITIONED and state is HostState.SUSPECT:
        return HostState.PARTITIONED
    return None
