"""Store contract for webhook subscriptions and delivery state (issue 7),
run on every backend (fake, sqlite, postgres) like test_contract.py."""

from __future__ import annotations

import pytest

from vmha.adapters.store.query import DELIVERED_KEEP
from vmha.domain.errors import Conflict, NotFound, ValidationError
from vmha.domain.model import Event
from vmha.ports import Delivery, DeliveryStatus, Store, Subscription

S = DeliveryStatus


def sub(sid: str = "s1", owner: str = "", created_at: float = 1.0) -> Subscription:
    return Subscription(
        id=sid, url="https://example.com/hook", secret="shh",
        event_types=("instance.*", "host.failed"), subject=None,
        project="p1" if owner else None, owner=owner, created_at=created_at,
    )


def test_subscription_round_trip_and_listing(store: Store) -> None:
    created = store.create_subscription(sub("s2", created_at=2.0))
    assert created == sub("s2", created_at=2.0)
    store.create_subscription(sub("s1", owner="p1", created_at=1.0))
    assert [s.id for s in store.list_subscriptions()] == ["s1", "s2"]
    assert [s.id for s in store.list_subscriptions(owner="p1")] == ["s1"]
    assert store.list_subscriptions(owner="p9") == []
    got = store.get_subscription("s1")
    assert got.event_types == ("instance.*", "host.failed") and got.project == "p1"
    with pytest.raises(Conflict):
        store.create_subscription(sub("s1"))


def test_missing_subscription_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_subscription("nope")
    with pytest.raises(NotFound):
        store.delete_subscription("nope")
    with pytest.raises(NotFound):
        store.save_deliveries("nope", [Delivery("nope", 1, S.DELIVERED, 1)], cursor=1)
    with pytest.raises(NotFound):
        store.list_deliveries("nope")


def test_cursor_moves_forward_only_with_the_deliveries(store: Store) -> None:
    store.create_subscription(sub())
    store.save_deliveries("s1", [Delivery("s1", 5, S.DELIVERED, 1, "", 3.0)], cursor=5)
    assert store.get_subscription("s1").cursor == 5
    store.save_deliveries("s1", [], cursor=3)  # an older writer: ignored
    assert store.get_subscription("s1").cursor == 5
    store.save_deliveries("s1", [Delivery("s1", 7, S.RETRYING, 2, "HTTP 500", 4.0)])
    assert store.get_subscription("s1").cursor == 5
    got = store.list_deliveries("s1")
    assert [(d.event_id, d.status, d.attempts) for d in got] == [
        (7, S.RETRYING, 2), (5, S.DELIVERED, 1)]
    assert got[0].last_error == "HTTP 500" and got[0].updated_at == 4.0


def test_delivery_records_are_upserted_and_filtered(store: Store) -> None:
    store.create_subscription(sub())
    store.save_deliveries("s1", [Delivery("s1", 9, S.RETRYING, 1, "timeout")])
    store.save_deliveries("s1", [Delivery("s1", 9, S.DEAD, 5, "HTTP 503")], cursor=9)
    assert store.list_deliveries("s1") == [Delivery("s1", 9, S.DEAD, 5, "HTTP 503")]
    assert store.list_deliveries("s1", S.DELIVERED) == []
    assert store.list_deliveries("s1", S.DEAD)[0].attempts == 5
    with pytest.raises(ValidationError):
        store.list_deliveries("s1", limit=0)


def test_only_the_newest_delivered_records_are_kept(store: Store) -> None:
    store.create_subscription(sub())
    store.save_deliveries("s1", [Delivery("s1", 1, S.DEAD, 3, "down")])
    batch = [Delivery("s1", i, S.DELIVERED, 1) for i in range(2, DELIVERED_KEEP + 12)]
    store.save_deliveries("s1", batch, cursor=batch[-1].event_id)
    delivered = store.list_deliveries("s1", S.DELIVERED, limit=1000)
    assert len(delivered) == DELIVERED_KEEP
    assert delivered[0].event_id == DELIVERED_KEEP + 11
    assert [d.event_id for d in store.list_deliveries("s1", S.DEAD)] == [1]


def test_progress_of_several_subscriptions_is_saved_at_once(store: Store) -> None:
    store.create_subscription(sub("s1"))
    store.create_subscription(sub("s2"))
    store.save_deliveries("s2", [Delivery("s2", 3, S.RETRYING, 1, "timeout")])
    store.save_progress({
        "s1": ([Delivery("s1", 2, S.DELIVERED, 1), Delivery("s1", 2, S.DELIVERED, 2)], 4),
        "s2": ([Delivery("s2", 3, S.DELIVERED, 2)], 3),
        "gone": ([Delivery("gone", 1, S.DELIVERED, 1)], 1),  # deleted meanwhile: skipped
    })
    assert store.get_subscription("s1").cursor == 4
    assert store.list_deliveries("s1") == [Delivery("s1", 2, S.DELIVERED, 2)]
    assert store.list_deliveries("s2") == [Delivery("s2", 3, S.DELIVERED, 2)]
    assert store.get_subscription("s2").cursor == 3
    store.save_progress({})


def test_deleting_a_subscription_drops_its_deliveries(store: Store) -> None:
    store.create_subscription(sub())
    store.save_deliveries("s1", [Delivery("s1", 1, S.DEAD, 3, "down")])
    store.delete_subscription("s1")
    store.create_subscription(sub())
    assert store.list_deliveries("s1") == []
    assert store.get_subscription("s1").cursor == 0


def test_last_event_id_follows_the_outbox(store: Store) -> None:
    assert store.last_event_id() == 0
    stored = store.append_events([Event("host.up", "h1", 1.0), Event("host.up", "h2", 1.0)])
    assert store.last_event_id() == stored[-1].id
