"""Exponential backoff with jitter: the one formula every retry loop uses.

Callers: restart budgets (vmha.domain.restart.Backoff), the webhook
dispatcher's redelivery (vmha.adapters.bus.dispatcher), `vmha events tail`'s
reconnects (vmha.cli.tail). Pure: the random draw comes in as a number, so
the simulator and tests stay deterministic (no clock, no randomness here).
"""

from __future__ import annotations

DOUBLINGS_MAX = 30  # beyond this the cap has long been reached (and 2**n stays small)


def delay_s(attempt: int, initial_s: float, max_s: float, jitter: float = 0.0,
            draw: float = 0.5) -> float:
    """The wait before retry number `attempt` (0-based): `initial_s` doubled
    per attempt, at most `max_s`, times a factor in [1 - jitter, 1 + jitter]
    picked by `draw` (uniform in [0, 1); 0.5 means the middle: no jitter)."""
    base = min(max_s, initial_s * 2.0 ** min(max(attempt, 0), DOUBLINGS_MAX))
    return base * (1 + jitter * (2 * draw - 1))
