"""Isolation logic of the host agent: when to feed the watchdog, when to act.

Pure logic driven by the agent's loop with the Clock's `now` values (no
clock, no I/O here), so unit tests replay any timeline.

Contact: a signed ack from any controller, or signed probe replies from a
majority of the segment counting this host itself (2 * (reachable + 1) >
peers + 1; with no peers only a controller counts). A contact lasts
`window_s` (default 3 heartbeat intervals). The rule is
`vmha.domain.isolation.contact_until`, the one the controller checks its
peer samples against before it trusts this agent's self-fence. Isolation starts when the last
contact expires; after `timeout_s` of isolation the configured action is
due once:

- `reboot`: stop feeding the watchdog for good (latched: a host that decided
  to self-fence never resumes feeding, or the controller's deadline lies);
- `stop-vms`: the agent runs its hook; if the hook fails it falls back to
  `reboot` (`hook_failed()`); contact later re-arms the action;
- `none`: always feed; the controller must not rely on a self-fence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vmha.domain.isolation import contact_until

ACTIONS = ("stop-vms", "reboot", "none")


@dataclass(frozen=True)
class Verdict:
    in_contact: bool
    isolated_for: float  # seconds since the last contact expired; 0 in contact
    feed: bool  # feed the watchdog now
    act: bool  # run the isolation action now (true once per isolation)


class IsolationMonitor:
    def __init__(
        self,
        peers: Iterable[str],
        window_s: float,
        timeout_s: float,
        action: str,
        started_at: float,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"isolation action {action!r} is not one of {ACTIONS}")
        self._peers = frozenset(peers)
        self._window = window_s
        self._timeout = timeout_s
        self._action = action
        # `started_at` counts as a contact: the agent's start-up grace (see
        # `initial_contact`), so a fresh agent is not isolated before its
        # first ack can arrive.
        self._controller_at = started_at
        self._peer_at: dict[str, float] = {}
        self._acted = False
        self._fenced = False

    @property
    def self_fencing(self) -> bool:
        """True once the agent stopped feeding the watchdog for good."""
        return self._fenced

    def controller_contact(self, now: float) -> None:
        self._controller_at = max(self._controller_at, now)

    def peer_contact(self, peer: str, now: float) -> None:
        if peer in self._peers:
            self._peer_at[peer] = max(self._peer_at.get(peer, now), now)

    def controller_silent_for(self, now: float) -> float:
        """Seconds since the last controller ack (or the agent's start)."""
        return max(0.0, now - self._controller_at)

    def hook_failed(self) -> None:
        """The stop-vms hook failed: fall back to the watchdog."""
        self._fenced = True

    def last_contact(self) -> float:
        """The latest moment the agent had contact (what it persists)."""
        return self.contact_until() - self._window

    def contact_until(self) -> float:
        """When the current contact (controller or peer majority) expires."""
        return contact_until(self._controller_at, self._peer_at.values(), len(self._peers),
                             self._window)

    def evaluate(self, now: float) -> Verdict:
        isolated_for = max(0.0, now - self.contact_until())
        in_contact = isolated_for == 0.0
        act = False
        if in_contact and not self._fenced:
            self._acted = False
        elif isolated_for >= self._timeout and not self._acted and self._action != "none":
            self._acted = act = True
            if self._action == "reboot":
                self._fenced = True
        return Verdict(in_contact, isolated_for, not self._fenced, act)


def initial_contact(now: float, saved: float | None, window_s: float, grace_s: float) -> float:
    """The contact time a (re)started agent assumes.

    At most `grace_s` of grace after the start (time for a first ack), and
    never more than the persisted last contact allows: a restarted agent
    must not stretch its isolation deadline by a whole window each time.
    """
    floor = now + grace_s - window_s
    return floor if saved is None else max(saved, floor)
