"""Who runs the recovery engine: this controller's term as leader.

`Leadership.run()` plays the coordinator's rounds (vmha.adapters.coord) in
a thread, every `round_s`. When this controller becomes the leader it
claims a new epoch in the store (the fencing token) and calls
`on_elected(epoch)`: the service starts an engine whose writes go through
`store.fenced(epoch)`. When it stops being the leader it calls
`on_deposed()` at once: a round saying so, a resignation, or — without an
answer from etcd — the moment its lease may have run out (`valid_until`),
even while a round is still waiting on an unreachable etcd, or when the
service hands leadership over (`hand_over`: it hears no host while another
controller does, vmha.domain.handover; it then `abstain`s from elections). A controller
whose event loop or process was paused past its lease learns it from that
deadline before anything else runs, and its engine's late writes are
refused by the store anyway (NotLeader).

Used by vmha.controller.service. What it is not: consensus (etcd decides who
holds the lease) nor the engine (which knows nothing of terms).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from vmha.domain.errors import VmhaError
from vmha.ports import Clock, ControllerInfo, Coordinator, CoordView, Store

log = logging.getLogger("vmha.leadership")


class Leadership:
    def __init__(self, coordinator: Coordinator, store: Store, clock: Clock, round_s: float,
                 on_elected: Callable[[int], Awaitable[None]],
                 on_deposed: Callable[[], Awaitable[None]],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.coordinator = coordinator
        self.store = store
        self.clock = clock
        self.round_s = round_s
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self._mono = monotonic
        self.view = CoordView(healthy=False, error="no round yet")
        self.viewed_at = 0.0  # monotonic time of the last round's answer
        self.epoch = 0  # the store epoch of the current term (0: not leading)
        self.terms = 0
        self.stopping = False  # resigned: no new term, whatever a round says
        self.abstaining = False  # handed over, or deaf: no new term (vmha.domain.handover)

    @property
    def name(self) -> str:
        return self.coordinator.name

    @property
    def leading(self) -> bool:
        return self.epoch > 0

    def authority(self) -> bool:
        """Leading, and the lease certainly still held."""
        return self.leading and self._mono() < self.view.valid_until

    def join(self, info: ControllerInfo) -> None:
        self.coordinator.join(info)

    async def run(self) -> None:
        try:
            while True:
                await self._round()
                await asyncio.sleep(self.round_s)
        finally:
            if self.leading:
                await self._depose("this controller stops")

    async def _round(self) -> None:
        step = asyncio.ensure_future(asyncio.to_thread(self.coordinator.step))
        while self.leading and not step.done():
            left = self.view.valid_until - self._mono()
            if left <= 0:
                await self._depose("its lease may have run out (no answer from etcd)")
                break
            await asyncio.wait({step}, timeout=left)
        view = await step
        self.view, self.viewed_at = view, self._mono()
        if view.leading and not self.leading and not self.stopping and not self.abstaining:
            await self._elect()
        elif not view.leading and self.leading:
            why = (f"{view.leader} leads now" if view.leader and view.healthy
                   else view.error or "its lease ran out")
            await self._depose(why)

    async def _elect(self) -> None:
        try:
            epoch = await asyncio.to_thread(self.store.claim_leadership, self.name,
                                            self.clock.now())
        except VmhaError as exc:
            log.warning("elected, but cannot claim the store (%s); trying next round",
                        exc.detail)
            return
        if self._mono() >= self.view.valid_until:
            log.warning("lease ran out while claiming the store; not leading")
            return
        self.epoch = epoch
        self.terms += 1
        log.info("controller %s leads the recovery engine (epoch %d)", self.name, epoch)
        await self.on_elected(epoch)

    async def _depose(self, why: str) -> None:
        epoch, self.epoch = self.epoch, 0
        log.warning("controller %s no longer leads (epoch %d): %s", self.name, epoch, why)
        await self.on_deposed()

    def abstain(self, yes: bool, why: str = "") -> None:
        """Stand for leader (`yes` False) or not, from the next round on; a
        round answered meanwhile that says "leading" starts no term, and the
        coordinator gives the leader key up (vmha.domain.handover)."""
        if yes == self.abstaining:
            return
        self.abstaining = yes
        self.coordinator.abstain(yes)
        if yes:
            log.warning("controller %s does not stand for leader: %s", self.name, why)
        else:
            log.info("controller %s stands for leader again%s", self.name,
                     f": {why}" if why else "")

    async def hand_over(self, why: str) -> None:
        """Stop leading and give the leader key up (keeping the lease and
        the membership), so that a controller that hears the hosts takes
        over within a round; stand again only once `abstain(False)`."""
        self.abstaining = True
        self.coordinator.abstain(True)
        log.warning("controller %s hands leadership over: %s; it does not stand for leader "
                    "again while it hears (almost) no host", self.name, why)
        if self.leading:
            await self._depose("handed over to a controller that hears the hosts")

    async def resign(self) -> None:
        """A clean stop: stop leading here, then give the lease up so that
        another controller takes over without waiting for it to run out.
        A round answered before the lease was given up still says "leading":
        it must not start a new term (it did, during SIGTERM: a second
        engine on a closing heartbeat intake, which called itself overloaded)."""
        self.stopping = True
        if self.leading:
            await self._depose("resigned")
        await asyncio.to_thread(self.coordinator.resign)
