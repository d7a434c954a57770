"""The deadline queue of the detector loop: order, replacement, cancel."""

from __future__ import annotations

import random

from vmha.domain.deadlines import DeadlineQueue


def test_keys_fall_due_in_time_order_and_leave_the_queue() -> None:
    q: DeadlineQueue[str] = DeadlineQueue()
    for key, at in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("d", 9.0)):
        q.schedule(key, at)
    assert q.next_at() == 1.0 and len(q) == 4
    assert q.pop_due(0.5) == []
    assert q.pop_due(3.0) == ["a", "b", "c"]
    assert len(q) == 1 and "d" in q and "a" not in q and q.next_at() == 9.0


def test_a_key_is_due_once_at_its_latest_time_and_cancel_forgets_it() -> None:
    q: DeadlineQueue[str] = DeadlineQueue()
    q.schedule("h1", 1.0)
    q.schedule("h1", 5.0)  # a heartbeat moved its deadline
    q.schedule("h2", 2.0)
    q.schedule("h2", 0.5)  # earlier also works
    q.schedule("h3", 1.5)
    q.cancel("h3")
    assert q.when("h1") == 5.0 and q.when("h3") is None
    assert q.pop_due(4.0) == ["h2"]
    assert q.next_at() == 5.0
    assert q.pop_due(10.0) == ["h1"] and q.next_at() is None and len(q) == 0


def test_many_reschedules_keep_the_heap_small_and_the_answers_right() -> None:
    rng = random.Random(7)
    q: DeadlineQueue[int] = DeadlineQueue()
    latest: dict[int, float] = {}
    for _ in range(20_000):
        key, at = rng.randrange(100), rng.uniform(0, 1000)
        q.schedule(key, at)
        latest[key] = at
    assert len(q._heap) <= 2 * len(q) + 64 + 1
    assert q.pop_due(500.0) == sorted((k for k, at in latest.items() if at <= 500.0),
                                      key=lambda k: latest[k])
    assert len(q) == sum(1 for at in latest.values() if at > 500.0)
