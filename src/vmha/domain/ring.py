"""Which controller watches which host: a consistent hash ring.

Every controller receives every heartbeat, but each judges the silence of
its share of the hosts only (docs/controllers.md, "Heartbeat sharding").
The share comes from a consistent hash ring over the controllers' group
membership: each member puts `VNODES` points on a ring of 2**64 positions
(blake2b of "member#i"), and a host belongs to the member of the first
point at or after the host's own position. A member that joins takes over
about 1/n of the hosts, each from one of the others; one that leaves hands
its hosts out to the rest; every other host keeps its owner (minimal
movement), which is what keeps a join or a leave from moving detection of
the whole fleet at once.

Pure: no I/O, no clock. Called by the controller (vmha.controller.service)
on every change of the membership, and by the engine's detector through
`vmha.engine.shard`.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence

VNODES = 256  # points per member: each share within about 7 % of 1/n (tests/unit/test_ring.py)


def _position(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class Ring:
    """The ring of `members` (names); `owner(host)` is the member that owns it."""

    def __init__(self, members: Iterable[str], vnodes: int = VNODES) -> None:
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        points = sorted((_position(f"{m}#{i}"), m) for m in self.members for i in range(vnodes))
        self._keys = [p for p, _ in points]
        self._owners = [m for _, m in points]

    def owner(self, host: str) -> str | None:
        """The member owning `host`; None on an empty ring."""
        if not self._keys:
            return None
        i = bisect.bisect_left(self._keys, _position(host))
        return self._owners[i % len(self._owners)]

    def shares(self, hosts: Iterable[str]) -> dict[str, list[str]]:
        """Every member's hosts, sorted (members without any included)."""
        out: dict[str, list[str]] = {m: [] for m in self.members}
        for host in sorted(hosts):
            owner = self.owner(host)
            if owner is not None:
                out[owner].append(host)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and other._keys == self._keys \
            and other._owners == self._owners

    def __hash__(self) -> int:
        return hash(self.members)


def moved(before: Ring, after: Ring, hosts: Sequence[str]) -> list[str]:
    """The hosts whose owner differs between two rings."""
    return [h for h in hosts if before.owner(h) != after.owner(h)]
