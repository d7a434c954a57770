"""When a host counts as cut off: the one rule the agent and the controller share.

The agent self-fences (vmha.agent.isolation) only once it has had no
contact for a whole window: contact is a controller's ack, or probe
replies from a majority of its segment counting itself (`majority`). The
controller may take the agent's self-fence deadline as a fence only if it
can show the same thing from outside: that the host was cut off from the
controller AND from such a majority for the whole window. It cannot watch
the host's packets; it samples: every `confirm_retry_s` it asks the
host's peers whether they reach it (`Sample`), and `observe` folds each
sample into a `CutOffWindow`:

- a sample that leaves a majority possible (a peer reached the host, or
  too few peers answered that they cannot: a peer that did not answer may
  be reaching it), or a heartbeat since the window began, restarts the
  window at that sample: the agent may have had contact up to then;
- a gap between two samples longer than `max_gap_s` restarts it too: the
  host may have had contact in the gap (a controller restart, a first
  sample long after the last heartbeat);
- the deadline is proven once an unbroken chain of cut-off samples reaches
  `since + deadline_s` (`proven`).

Sampling is the controller's limit: a link that lets a packet through
only between two samples is missed. The samples come `confirm_retry_s`
apart, well inside the agent's contact window, so such a link would have
to be cut off almost all the time; a lossy link that lets the agent
through now and then shows a peer contact (or an unanswered probe) in
some sample and keeps restarting the window.

Pure: no clock, no I/O. Used by the agent's isolation monitor, the
host-recovery job (vmha.domain.recovery) and the engine that samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any


def peers_needed(peers: int) -> int:
    """Peers a host must reach, besides itself, to be in contact without a
    controller: with itself a majority of its segment, 2 * (reached + 1) >
    peers + 1. With no peers none can give contact (only a controller can)."""
    return (peers + 1) // 2


def majority(peers: int, reached: int) -> bool:
    """Do `reached` of a host's `peers` give it contact (see `peers_needed`)?"""
    return peers > 0 and reached >= peers_needed(peers)


def contact_until(controller_at: float, peer_times: Iterable[float], peers: int,
                  window_s: float) -> float:
    """When a host's contact expires: a window after the controller's last
    ack, or after the latest moment a majority of its peers had answered
    (the `peers_needed`-th most recent peer reply). The agent's rule."""
    until = controller_at + window_s
    need = peers_needed(peers)
    times = sorted(peer_times, reverse=True)
    if peers and len(times) >= need:
        until = max(until, times[need - 1] + window_s)
    return until


@dataclass(frozen=True)
class Sample:
    """What the controller saw at `at`: `heard` a heartbeat since the
    window began; of the host's `peers` (the other hosts of its segment, as
    its agent counts them) `reach` reached it and `cannot_reach` answered
    that they cannot; the rest did not answer or were not asked."""

    at: float
    peers: int
    reach: int = 0
    cannot_reach: int = 0
    heard: bool = False

    @property
    def cut_off(self) -> bool:
        """Cut off from the controller and from any majority of its peers:
        even if every peer that did not say "cannot reach" reached it, they
        would be too few."""
        if self.heard or self.reach:
            return False
        possible = self.peers - self.cannot_reach
        return self.peers == 0 or not majority(self.peers, possible)

    def cannot_reach_needed(self) -> int:
        """Peers that must answer "cannot reach" for `cut_off`."""
        return self.peers - peers_needed(self.peers) + 1 if self.peers else 0

    def why_not(self) -> str:
        """Why this sample does not show the host cut off ("" if it does)."""
        if self.heard:
            return "heartbeats resumed"
        if self.reach:
            return f"{self.reach} of {self.peers} peers reach it"
        if not self.cut_off:
            return (f"only {self.cannot_reach} of {self.peers} peers answered that they "
                    f"cannot reach it; {self.cannot_reach_needed()} needed to rule out "
                    "a majority")
        return ""


@dataclass(frozen=True)
class CutOffWindow:
    """Since when a host is shown cut off without a break: `since`, the
    latest moment it may have had contact (the self-fence deadline counts
    from here); `sampled_at`, the latest sample (0: none yet); `samples`,
    how many cut-off samples in a row since `since`."""

    since: float = 0.0
    sampled_at: float = 0.0
    samples: int = 0

    @classmethod
    def starting(cls, last_contact: float) -> CutOffWindow:
        """A window whose last known contact was at `last_contact` (a
        heartbeat, or a round in which a peer reached it)."""
        return cls(since=last_contact, sampled_at=last_contact)

    @classmethod
    def from_storage(cls, raw: Any) -> CutOffWindow:
        raw = raw or {}
        return cls(since=float(raw.get("since", 0.0)),
                   sampled_at=float(raw.get("sampled_at", 0.0)),
                   samples=int(raw.get("samples", 0)))

    def to_storage(self) -> dict[str, Any]:
        return {"since": self.since, "sampled_at": self.sampled_at, "samples": self.samples}

    def deadline(self, deadline_s: float) -> float:
        return self.since + deadline_s


def observe(window: CutOffWindow, sample: Sample, max_gap_s: float) -> CutOffWindow:
    """Fold one sample into the window (see the module docstring)."""
    if not sample.cut_off or sample.at - window.sampled_at > max_gap_s:
        restarted = CutOffWindow(since=sample.at, sampled_at=sample.at)
        return replace(restarted, samples=1) if sample.cut_off else restarted
    return replace(window, sampled_at=max(window.sampled_at, sample.at),
                   samples=window.samples + 1)


def proven(window: CutOffWindow, deadline_s: float) -> bool:
    """An unbroken chain of cut-off samples reaches the self-fence deadline."""
    return window.samples > 0 and window.sampled_at >= window.deadline(deadline_s)
