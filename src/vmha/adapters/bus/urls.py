"""Outbound URL safety for webhooks: no server-side request forgery.

`check_url_syntax(url)` refuses anything but http(s) with a host and no
credentials. `check_addresses(url, addresses, allow_private)` refuses
loopback, private, link-local, multicast, reserved and unspecified
addresses unless the admin allowed private destinations
(`[events] allow_private_destinations`); cloud metadata addresses
(169.254.169.254, fd00:ec2::254, 100.100.100.200) are refused even then.
An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible
`::a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
`2002::/16`, Teredo, ISATAP) is judged by every address it carries as well,
so `[::127.0.0.1]` or `[64:ff9b::a9fe:a9fe]` is refused like the IPv4
address inside it; the NAT64 local-use prefix `64:ff9b:1::/48`, whose
embedding cannot be known, is always refused. `resolve(host)` returns
every address of a name (all must pass, so a name with one public and one
private address is refused).

Called by the subscriptions API (on create), the webhook sender (before
each delivery, since DNS can change) and the instances API for a tenant's
`spec.health_url` (vmha.api.offers). Errors are ValidationError on `url`.
Residual risk, documented in docs/events.md: a name re-resolved by the
HTTP client between the check and the connect (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from vmha.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
URL_MAX = 2048
_V6 = ipaddress.IPv6Network
_EMBEDDING_LOW32 = (  # prefixes whose last 32 bits are an IPv4 address
    _V6("::ffff:0:0/96"),  # IPv4-mapped
    _V6("::ffff:0:0:0/96"),  # SIIT IPv4-translated
    _V6("::/96"),  # IPv4-compatible (deprecated)
    _V6("64:ff9b::/96"),  # NAT64 well-known prefix
)
_NAT64_LOCAL = _V6("64:ff9b:1::/48")  # RFC 8215: the embedding depends on the site
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)  # interface id's upper half carrying an IPv4


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


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries (none for IPv4, :: and ::1)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    value = int(address)
    found: list[ipaddress.IPv4Address] = []
    if any(address in net for net in _EMBEDDING_LOW32) and value > 1:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return found


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why a delivery to `address` is refused, or None when it is allowed:
    the address itself and every IPv4 address it carries must pass."""
    if isinstance(address, ipaddress.IPv6Address) and address in _NAT64_LOCAL:
        return (f"{address} is in the NAT64 local-use prefix {_NAT64_LOCAL}, whose "
                "embedded IPv4 address cannot be checked")
    for inner in embedded_ipv4(address):
        why = _refusal_of(inner, allow_private)
        if why is not None:
            return f"{address} carries the IPv4 address {inner}: {why}"
    return _refusal_of(address, allow_private)


def _refusal_of(address: IPAddress, allow_private: bool) -> str | None:
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_literal_url(url: str, offered: Iterable[Network]) -> None:
    """A URL a tenant gives for vmha to fetch (an instance's health URL, an
    http probe): its host must be an IP address (no name to re-resolve
    later), public, or inside a network the admin offers; the addresses
    refused everywhere (metadata, unspecified, multicast, unknowable NAT64)
    stay refused inside offered networks too."""
    parts = check_url_syntax(url)
    host = parts.hostname or ""
    address = literal_address(host)
    if address is None:
        raise ValidationError("url", f"{host!r} is a host name; give the guest's IP address "
                              "(names are not accepted from tenants)")
    inside = any(address in net for net in offered)
    check_addresses(host, [address], allow_private=inside)
