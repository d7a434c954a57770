"""The one backoff formula (vmha.domain.backoff) its callers share."""

from __future__ import annotations

import pytest

from vmha.domain.backoff import delay_s


def test_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    assert [delay_s(n, 0.25, 5.0) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert delay_s(10_000, 1.0, 300.0) == 300.0  # no overflow for a very long outage
    assert delay_s(-1, 1.0, 300.0) == 1.0


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999, 1.1996)])
def test_the_draw_picks_the_jitter_factor(draw: float, factor: float) -> None:
    assert delay_s(2, 1.0, 300.0, jitter=0.2, draw=draw) == pytest.approx(4.0 * factor)
