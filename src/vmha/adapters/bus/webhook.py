"""Webhook delivery: one signed HTTP POST per event, and signature checks.

`WebhookSender.send(subscription, event)` POSTs the event's CloudEvents
JSON to the subscription's URL with

    Vmha-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

and returns when the receiver answered 2xx. Anything else (connection
error, timeout, non-2xx, a redirect — never followed) raises
DeliveryFailed; the dispatcher decides about retries. The destination is
re-checked before the POSTs of every 30 s (DNS may have changed since the
subscription was made), and the POST goes to the checked address itself
(`http1.Http1Poster`, which also explains why this is not httpx). An
event is rendered once for all the subscriptions that get it.

`sign` and `verify` are the two halves of the signature; receivers (and
the tests) use `verify` with a replay window (default 300 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import SplitResult

from vmha import __version__
from vmha.adapters.bus import urls
from vmha.adapters.bus.http1 import Answer, Http1Poster
from vmha.adapters.bus.render import CONTENT_TYPE, cloudevent_json
from vmha.domain.model import Event
from vmha.errors import TemporaryError, ValidationError
from vmha.ports import Clock, Subscription

SIGNATURE_HEADER = "Vmha-Signature"
REPLAY_WINDOW_S = 300
DNS_CACHE_S = 30.0  # a destination's checked addresses are reused this long
BODY_CACHE = 64  # rendered events kept (the subscriptions send the same ones)
URL_CACHE = 10_000
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
        # Every subscription gets the same bytes for an event (only the
        # signature differs): rendered once for all of them.
        self._bodies: OrderedDict[int, bytes] = OrderedDict()
        # A URL checked a moment ago is not checked again (as the DNS cache).
        self._checked: dict[str, tuple[float, SplitResult, str]] = {}

    async def aclose(self) -> None:
        await self._poster.aclose()

    async def send(self, subscription: Subscription, event: Event) -> None:
        _, error = await self.send_many(subscription, [event])
        if error is not None:
            raise error

    async def send_many(self, subscription: Subscription, events: Sequence[Event],
                        ) -> tuple[int, DeliveryFailed | None]:
        """POST the events in order, pipelined on the subscription's
        connection: how many were delivered (answered 2xx) before the first
        that was not, and why that one was not (None: all delivered)."""
        try:
            parts, address = await self._destination(subscription.url)
        except DeliveryFailed as exc:
            return 0, exc
        timestamp = int(self._clock.now())
        items = [(self._body(e), self._headers(subscription, e, timestamp)) for e in events]
        answers, failed = await self._poster.post_all(subscription.id, parts, address, items)
        for n, answer in enumerate(answers):
            refusal = _refusal(answer)
            if refusal is not None:
                return n, refusal
        if failed is not None:
            return len(answers), DeliveryFailed(_short(str(failed)))
        return len(answers), None

    def _headers(self, subscription: Subscription, event: Event,
                 timestamp: int) -> dict[str, str]:
        return {
            "Content-Type": CONTENT_TYPE,
            SIGNATURE_HEADER: sign(subscription.secret, timestamp, self._body(event)),
            "Vmha-Event-Id": str(event.id),
            "User-Agent": f"vmha/{__version__}",
        }

    def _body(self, event: Event) -> bytes:
        body = self._bodies.get(event.id)
        if body is None:
            body = self._bodies[event.id] = cloudevent_json(event, self._source)
            while len(self._bodies) > BODY_CACHE:
                self._bodies.popitem(last=False)
        return body

    async def _destination(self, url: str) -> tuple[SplitResult, str]:
        now = self._clock.now()
        cached = self._checked.get(url)
        if cached is not None and now - cached[0] < DNS_CACHE_S:
            return cached[1], cached[2]
        parts, address = await self._check_destination(url)
        if len(self._checked) > URL_CACHE:
            self._checked.clear()
        self._checked[url] = (now, parts, address)
        return parts, address

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


def _refusal(answer: Answer) -> DeliveryFailed | None:
    """Why an answer is not a delivery (None: 2xx). Redirects are refused."""
    status = answer.status
    if 300 <= status < 400:
        where = answer.headers.get("location", "?")
        return DeliveryFailed(_short(f"HTTP {status}: redirect to {where} refused"))
    if not 200 <= status < 300:
        text = answer.body.decode("utf-8", "replace").strip()
        return DeliveryFailed(_short(f"HTTP {status}: {text}"))
    return None


def _short(text: str) -> str:
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"
