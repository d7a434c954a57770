"""Publishing events on the OpenStack notification bus (oslo.messaging).

`OsloPublisher.send(subscription, event)` publishes the event as an oslo
notification (`render.oslo_notification`: event_type `vmha.<type>`,
priority from the severity, the payload) on `exchange` / `topic`
(defaults `notifications` / `vmha`), so Ceilometer and Aodh event alarms
consume it unchanged. It fits the dispatcher's `Sender` protocol: the
service keeps one internal subscription (id `amqp`, URL `amqp:`) whose
stored cursor makes AMQP publishing at-least-once and resumable like a
webhook; `RoutingSender` sends `amqp:` subscriptions here and the rest to
the webhook sender.

oslo.messaging is optional (`pip install vmha[amqp]`) and synchronous:
each publish runs in a thread with a bounded number of connection retries,
so a broker outage becomes DeliveryFailed and the dispatcher's backoff
takes over. Why not `oslo_messaging.Notifier`: its messaging driver logs
and swallows send errors, which would lose notifications silently while
the broker is down. We send the messagingv2 envelope ourselves through the
transport's notification call (what that driver does, minus the
swallowing), with our deterministic message_id. The broker URL (with its
password) stays in the config; it is never stored or shown by the API.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from vmha.adapters.bus.render import oslo_notification
from vmha.adapters.bus.webhook import DeliveryFailed
from vmha.domain.model import Event
from vmha.errors import ConfigError
from vmha.ports import Subscription

AMQP_SUBSCRIPTION = "amqp"
AMQP_SCHEME = "amqp:"
_DEFAULTS_LOCK = threading.Lock()


def amqp_subscription(exchange: str, topic: str, cursor: int, now: float) -> Subscription:
    """The internal subscription that drives AMQP publishing (no secret:
    nothing is signed on the bus)."""
    return Subscription(id=AMQP_SUBSCRIPTION, url=f"{AMQP_SCHEME}{exchange}/{topic}",
                        secret="-", event_types=("*",), created_at=now,  # noqa: S106
                        cursor=cursor)


class OsloPublisher:
    """Publishes oslo notifications through one oslo.messaging Notifier."""

    def __init__(self, transport_url: str, *, exchange: str = "notifications",
                 topic: str = "vmha", publisher_id: str = "vmha", retries: int = 2,
                 project_id: str = "", ceilometer_priorities: bool = False) -> None:
        try:
            import kombu.exceptions
            import oslo_messaging
            from oslo_config import cfg
        except ImportError as exc:
            raise ConfigError(
                "[events] amqp_url is set but oslo.messaging is not installed; "
                "install vmha[amqp] or remove amqp_url"
            ) from exc
        # What a failed publish raises (kombu's errors are not OSErrors).
        self._errors: tuple[type[BaseException], ...] = (
            oslo_messaging.MessagingException, kombu.exceptions.KombuError, OSError)
        with _DEFAULTS_LOCK:  # the exchange is an option default in oslo
            oslo_messaging.set_transport_defaults(control_exchange=exchange)
            conf = cfg.ConfigOpts()
            conf([], project="vmha")
            try:
                self._transport = oslo_messaging.get_notification_transport(
                    conf, url=transport_url)
            except oslo_messaging.InvalidTransportURL as exc:
                raise ConfigError(f"[events] amqp_url is not a valid transport URL: "
                                  f"{exc}") from exc
        self._publisher_id = publisher_id
        self._project_id = project_id  # for events without a project (host events)
        self._ceilometer = ceilometer_priorities
        self._topic = topic
        self._retries = retries
        self._target = oslo_messaging.Target
        self._lock = threading.Lock()  # one publish at a time on the transport

    async def send(self, subscription: Subscription, event: Event) -> None:
        await asyncio.to_thread(self._publish, event)

    def _publish(self, event: Event) -> None:
        note = oslo_notification(event, self._publisher_id, self._project_id, self._ceilometer)
        # Topic `<topic>.<priority>`, as oslo's messagingv2 driver does.
        target = self._target(topic=f"{self._topic}.{note['priority'].lower()}")
        send = self._transport._send_notification  # see the module docstring
        try:
            with self._lock:
                send(target, {}, note, version=2.0, retry=self._retries)
        except self._errors as exc:
            raise DeliveryFailed(f"AMQP publish failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await asyncio.to_thread(self._transport.cleanup)


class RoutingSender:
    """Sends `amqp:` subscriptions to the AMQP publisher, others as webhooks."""

    def __init__(self, webhook: Any, amqp: OsloPublisher | None) -> None:
        self._webhook = webhook
        self._amqp = amqp

    async def send(self, subscription: Subscription, event: Event) -> None:
        if subscription.url.startswith(AMQP_SCHEME):
            if self._amqp is None:
                raise DeliveryFailed("AMQP is not configured ([events] amqp_url)")
            await self._amqp.send(subscription, event)
        else:
            await self._webhook.send(subscription, event)

    async def send_many(self, subscription: Subscription, events: Sequence[Event],
                        ) -> tuple[int, DeliveryFailed | None]:
        """Webhooks pipelined (WebhookSender.send_many); AMQP one by one."""
        if not subscription.url.startswith(AMQP_SCHEME):
            result: tuple[int, DeliveryFailed | None] = await self._webhook.send_many(
                subscription, events)
            return result
        for n, event in enumerate(events):
            try:
                await self.send(subscription, event)
            except DeliveryFailed as exc:
                return n, exc
        return len(events), None

    async def aclose(self) -> None:
        if self._amqp is not None:
            await self._amqp.aclose()
        await self._webhook.aclose()
