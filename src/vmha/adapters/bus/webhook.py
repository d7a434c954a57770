"""Webhook delivery: one signed HTTP POST per event, and signature checks.

`WebhookSender.send(subscription, event)` POSTs the event's CloudEvents
JSON to the subscription's URL with

    Vmha-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

and returns when the receiver answered 2xx. Anything else (connection
error, timeout, non-2xx, a redirect — never followed) raises
DeliveryFailed; the dispatcher decides about retries. The destination is
re-checked before every POST (DNS may have changed since the
subscription was made), and the POST goes to the checked address itself
(`http1.Http1Poster`, which also explains why this is not httpx).

`sign` and `verify` are the two halves of the signature; receivers (and
the tests) use `verify` with a replay window (default 300 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import SplitResult

from vmha import __version__
from vmha.adapters.bus import urls
from vmha.adapters.bus.http1 import Http1Poster, PostFailed
from vmha.adapters.bus.render import CONTENT_TYPE, cloudevent_json
from vmha.domain.model import Event
from vmha.errors import TemporaryError, ValidationError
from vmha.ports import Clock, Subscription

SIGNATURE_HEADER = "Vmha-Signature"
REPLAY_WINDOW_S = 300
DNS_CACHE_S = 30.0
ERROR_MAX = 300  # characters of an error kept in delivery records


class DeliveryFailed(TemporaryError):
    """One delivery attempt failed; `detail` says why (kept as last_error)."""

    title = "Delivery failed"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Vmha-Signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float,
           window_s: float = REPLAY_WINDOW_S) -> bool:
    """Whether `header` signs `body` with `secret` and its time is within
    `window_s` of `now` (either way: clocks drift). Constant-time compare."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > window_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


Resolver = Callable[[str, int], Awaitable[list[urls.IPAddress]]]


class WebhookSender:
    """Sends events to webhook URLs (one keep-alive connection per subscription)."""

    def __init__(self, clock: Clock, *, timeout_s: float, allow_private: bool,
                 source: str = "vmha", resolver: Resolver | None = None) -> None:
        self._clock = clock
        self._allow_private = allow_private
        self._source = source
        self._resolver = resolver or _thread_resolve
        self._dns: dict[tuple[str, int], tuple[float, list[urls.IPAddress]]] = {}
        self._poster = Http1Poster(timeout_s)

    async def aclose(self) -> None:
        await self._poster.aclose()

    async def send(self, subscription: Subscription, event: Event) -> None:
        parts, address = await self._check_destination(subscription.url)
        body = cloudevent_json(event, self._source)
        timestamp = int(self._clock.now())
        headers = {
            "Content-Type": CONTENT_TYPE,
            SIGNATURE_HEADER: sign(subscription.secret, timestamp, body),
            "Vmha-Event-Id": str(event.id),
            "User-Agent": f"vmha/{__version__}",
        }
        try:
            answer = await self._poster.post(subscription.id, parts, address, body, headers)
        except PostFailed as exc:
            raise DeliveryFailed(_short(str(exc))) from exc
        status = answer.status
        if 300 <= status < 400:
            where = answer.headers.get("location", "?")
            raise DeliveryFailed(_short(f"HTTP {status}: redirect to {where} refused"))
        if not 200 <= status < 300:
            text = answer.body.decode("utf-8", "replace").strip()
            raise DeliveryFailed(_short(f"HTTP {status}: {text}"))

    async def _check_destination(self, url: str) -> tuple[SplitResult, str]:
        """The parsed URL and the checked address to connect to."""
        try:
            parts = urls.check_url_syntax(url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = await self._addresses(host, port)
            urls.check_addresses(host, addresses, self._allow_private)
        except ValidationError as exc:
            raise DeliveryFailed(exc.reason) from exc
        if not addresses:
            raise DeliveryFailed(f"host {host!r} has no address")
        return parts, str(addresses[0])

    async def _addresses(self, host: str, port: int) -> list[urls.IPAddress]:
        literal = urls.literal_address(host)
        if literal is not None:
            return [literal]
        now = self._clock.now()
        cached = self._dns.get((host, port))
        if cached is not None and now - cached[0] < DNS_CACHE_S:
            return cached[1]
        found = await self._resolver(host, port)
        self._dns[(host, port)] = (now, found)
        return found


async def _thread_resolve(host: str, port: int) -> list[urls.IPAddress]:
    return await asyncio.to_thread(urls.resolve, host, port)


def _short(text: str) -> str:
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"
