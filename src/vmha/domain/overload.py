"""Is the controller itself overloaded? (issue 18: graceful overload)

Called by the engine on every detector tick with what it measured; pure
(times come in as numbers, no clock, no I/O).

Signals of the controller's own backlog — never of the hosts' health:
- `intake_lag_s`: how far behind `now` the heartbeat intake has read (its
  thread starved, datagrams still queued in the kernel);
- `tick_lag_s`: how late the detector tick ran (the event loop was busy);
- `kernel_drops`: the heartbeat socket's cumulative drop counter; a rise
  means its receive buffer overflowed and heartbeats were lost.
The controller is *overloaded* as soon as one signal crosses its limit, and
no longer once all of them stayed quiet for `clear_after_s` (hysteresis, so
a load hovering at the limit does not flap). While overloaded the detector
keeps judging silence only up to what the intake has read; this module
only decides when to say so (`controller.overloaded` event, `/readyz`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OverloadLimits:
    lag_s: float = 1.0  # intake or tick later than this: overloaded
    clear_after_s: float = 10.0  # quiet this long: no longer overloaded


@dataclass(frozen=True)
class Load:
    """One tick's measurements."""

    intake_lag_s: float = 0.0
    tick_lag_s: float = 0.0
    kernel_drops: int = 0  # cumulative count of the heartbeat socket


@dataclass(frozen=True)
class Change:
    """`overloaded` became true (with why) or false."""

    overloaded: bool
    reason: str


class OverloadWatch:
    """The overloaded flag with its hysteresis. Not thread-safe."""

    def __init__(self, limits: OverloadLimits | None = None) -> None:
        self.limits = limits or OverloadLimits()
        self.overloaded = False
        self.reason = ""
        self._drops: int | None = None
        self._quiet_since: float | None = None

    def observe(self, now: float, load: Load) -> Change | None:
        """Feed one tick; the change of state it causes, if any."""
        trouble = self._trouble(load)
        if trouble:
            self._quiet_since = None
            self.reason = trouble
            if not self.overloaded:
                self.overloaded = True
                return Change(True, trouble)
            return None
        if not self.overloaded:
            return None
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < self.limits.clear_after_s:
            return None
        self.overloaded, self.reason = False, ""
        quiet = f"{self.limits.clear_after_s:g} s"
        return Change(False, f"heartbeat intake and detector kept up for {quiet}")

    def _trouble(self, load: Load) -> str:
        new_drops = 0 if self._drops is None else max(0, load.kernel_drops - self._drops)
        self._drops = load.kernel_drops
        limit = self.limits.lag_s
        parts = []
        if load.intake_lag_s > limit:
            parts.append(f"heartbeat intake {load.intake_lag_s:.1f} s behind")
        if load.tick_lag_s > limit:
            parts.append(f"detector tick {load.tick_lag_s:.1f} s late")
        if new_drops:
            parts.append(f"{new_drops} heartbeats dropped by the kernel (receive buffer full)")
        return "; ".join(parts)
