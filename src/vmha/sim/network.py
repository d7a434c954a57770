"""The simulated network: one link per host, plus the controller.

A packet from A to B crosses A's link and B's link (the controller has no
link of its own: it is the healthy core). Each host link can be down, drop
a share of packets, add delay with jitter, or have only its path to the
controller cut (`controller-link H down`). `transit()` returns the one-way
delay in seconds, or None when the packet is lost.

Randomness comes from a per-host `random.Random` handed in by the world, so
faults injected on one host do not shift the random draws of another.
Called by the world and the simulated adapters; no asyncio here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

CONTROLLER = "controller"


@dataclass
class Link:
    down: bool = False
    controller_down: bool = False
    loss: float = 0.0  # probability 0..1
    delay_s: float = 0.0
    jitter_s: float = 0.0


class Network:
    def __init__(self, hosts: list[str], base_delay_s: float,
                 rng_for: Callable[[str], random.Random]) -> None:
        self.links = {h: Link() for h in hosts}
        self._base = base_delay_s
        self._rng = {h: rng_for(f"net:{h}") for h in hosts}

    def link(self, host: str) -> Link:
        return self.links[host]

    def path_up(self, a: str, b: str) -> bool:
        """Whether packets can flow at all between a and b (ignoring loss)."""
        for end, other in ((a, b), (b, a)):
            if end == CONTROLLER:
                continue
            link = self.links[end]
            if link.down or (other == CONTROLLER and link.controller_down):
                return False
        return True

    def transit(self, a: str, b: str) -> float | None:
        """One packet a -> b: its delay in seconds, or None if it was lost."""
        if not self.path_up(a, b):
            return None
        delay = self._base
        for end in (a, b):
            if end == CONTROLLER:
                continue
            link, rng = self.links[end], self._rng[end]
            if link.loss > 0.0 and rng.random() < link.loss:
                return None
            delay += link.delay_s
            if link.jitter_s > 0.0:
                delay += rng.uniform(-link.jitter_s, link.jitter_s)
        return max(delay, self._base)

    def latency(self, a: str, b: str) -> float:
        """The nominal one-way delay (no loss, no jitter) of an up path."""
        return self._base + sum(self.links[e].delay_s for e in (a, b) if e != CONTROLLER)

    def round_trip(self, a: str, b: str, tries: int = 1) -> float | None:
        """A request a -> b and its answer, retried `tries` times: the
        round-trip time of the first exchange that got through, or None."""
        for _ in range(tries):
            there = self.transit(a, b)
            back = self.transit(b, a) if there is not None else None
            if there is not None and back is not None:
                return there + back
        return None
