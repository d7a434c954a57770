"""Nova's notifications on the cloud's bus, as "look again now" pokes.

vmha's inventory of an OpenStack cloud is re-read periodically; this
listener shortens the wait: an `instance.*` notification (versioned, on
`versioned_notifications`, or legacy `compute.instance.*` on
`notifications`) or a `service.update` wakes the inventory sync at once,
so a server created, moved or deleted is known within seconds. It does
not interpret the payloads (the next read of Nova is the truth).

oslo.messaging (extra `amqp`) with a listener pool of vmha's own: the
pool is a queue per topic for vmha, so it never takes notifications
away from other consumers of the same topics (Ceilometer). Runs its
consumer in a thread; `poke` must be thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from vmha.domain.errors import ConfigError

log = logging.getLogger("vmha.cloud.openstack")
POOL = "vmha-inventory"
INTERESTING = ("instance.", "compute.instance.", "service.update", "aggregate.")


def interesting(event_type: str) -> bool:
    return event_type.startswith(INTERESTING)


class _Endpoint:
    def __init__(self, poke: Callable[[str], None]) -> None:
        self._poke = poke

    def _any(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        if interesting(str(event_type)):
            self._poke(str(event_type))

    info = warn = error = _any


class NovaListener:
    """Listens on the cloud's notification topics until `stop()`."""

    def __init__(self, url: str, topics: Sequence[str], poke: Callable[[str], None],
                 exchange: str = "nova") -> None:
        try:
            import oslo_messaging as om
            from oslo_config import cfg
        except ImportError as exc:
            raise ConfigError("openstack.notifications_url needs oslo.messaging: "
                              "pip install 'vmha[amqp]'") from exc
        conf = cfg.ConfigOpts()
        conf([], project="vmha", validate_default_values=True)
        try:
            transport = om.get_notification_transport(conf, url=url)
        except (om.InvalidTransportURL, om.DriverLoadFailure) as exc:
            raise ConfigError("openstack.notifications_url: not a usable transport URL "
                              f"({type(exc).__name__})") from exc
        # the exchange explicitly: oslo's default is process-wide state (vmha's
        # own AMQP publisher sets it to its exchange)
        targets = [om.Target(topic=t, exchange=exchange) for t in topics]
        self._listener = om.get_notification_listener(
            transport, targets, [_Endpoint(poke)], executor="threading", pool=POOL)
        self._transport = transport

    def start(self) -> None:
        self._listener.start()
        log.info("openstack inventory: listening to Nova's notifications (pool %s)", POOL)

    def stop(self) -> None:
        try:
            self._listener.stop()
            self._listener.wait()
        finally:
            self._transport.cleanup()
