"""Outbound URL safety for webhooks: no server-side request forgery.

`check_url_syntax(url)` refuses anything but http(s) with a host and no
credentials. `check_addresses(url, addresses, allow_private)` refuses
loopback, private, link-local, multicast, reserved and unspecified
addresses unless the admin allowed private destinations
(`[events] allow_private_destinations`); cloud metadata addresses
(169.254.169.254, fd00:ec2::254) are refused even then. `resolve(host)`
returns every address of a name (all must pass, so a name with one public
and one private address is refused).

Called by the subscriptions API (on create) and the webhook sender (before
each delivery, since DNS can change). Errors are ValidationError on
`url`. Residual risk, documented in docs/events.md: a name re-resolved by
the HTTP client between the check and the connect (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from vmha.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
URL_MAX = 2048


def check_url_syntax(url: str) -> SplitResult:
    """The parsed URL, or ValidationError('url', why)."""
    if len(url) > URL_MAX:
        raise ValidationError("url", f"is longer than {URL_MAX} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        raise ValidationError("url", f"{url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationError(
            "url", f"scheme {parts.scheme or '(none)'!r} is not allowed; use http or https"
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "url", "must not contain credentials (user:password@); "
            "receivers authenticate deliveries by the Vmha-Signature header"
        )
    if not parts.hostname:
        raise ValidationError("url", f"{url!r} has no host")
    if port == 0:
        raise ValidationError("url", "port 0 is not a destination")
    return parts


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why a delivery to `address` is refused, or None when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    if address.is_unspecified or address.is_multicast:
        return f"{address} is not a unicast destination"
    if address.is_global:
        return None
    if allow_private:
        return None
    kind = (
        "loopback" if address.is_loopback
        else "link-local" if address.is_link_local
        else "private or reserved"
    )
    return (
        f"{address} is a {kind} address; private destinations are refused unless "
        "[events] allow_private_destinations = true"
    )


def check_addresses(host: str, addresses: Iterable[IPAddress], allow_private: bool) -> None:
    for address in addresses:
        why = refusal(address, allow_private)
        if why is not None:
            shown = host if str(address) == host else f"{host} ({address})"
            raise ValidationError("url", f"destination {shown} refused: {why}")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of `host` (blocking DNS; call from a thread)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationError("url", f"host {host!r} cannot be resolved: {exc}") from exc
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def check_url(url: str, allow_private: bool) -> None:
    """Syntax, then every resolved address (blocking; call from a thread)."""
    parts = check_url_syntax(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    check_addresses(host, resolve(host, port), allow_private)
