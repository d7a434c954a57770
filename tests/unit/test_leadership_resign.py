"""A controller that resigns (SIGTERM) starts no new term (vmha.controller.
leadership): a coordinator round answered before the lease was given up
still says "leading", and re-electing on it started a second engine while
the controller was shutting down."""

from __future__ import annotations

import asyncio
import math

from vmha.adapters.store.fake import FakeStore
from vmha.adapters.system import SystemClock
from vmha.controller.leadership import Leadership
from vmha.ports import ControllerInfo, CoordView


class SlowToResign:
    """Every round says this controller leads: the lease is given up only
    once `resign` has run, and a round may have been answered before."""

    name = "c1"

    def join(self, info: ControllerInfo) -> None: ...

    def step(self) -> CoordView:
        return CoordView(members=(ControllerInfo(self.name),), leader=self.name,
                         leading=True, valid_until=math.inf, lease_s=5.0)

    def resign(self) -> None: ...


def test_a_round_after_resigning_starts_no_new_term() -> None:
    terms: list[int] = []
    deposed: list[int] = []

    async def elected(epoch: int) -> None:
        terms.append(epoch)

    async def gone() -> None:
        deposed.append(len(terms))

    async def scenario() -> Leadership:
        lead = Leadership(SlowToResign(), FakeStore(), SystemClock(), 0.01, elected, gone)
        await lead._round()
        assert lead.leading and terms == [1]
        await lead.resign()
        for _ in range(3):
            await lead._round()
        return lead

    lead = asyncio.run(scenario())
    assert not lead.leading and terms == [1] and deposed == [1]


class Abstaining(SlowToResign):
    """Leads until it abstains; its rounds may still say "leading" a while."""

    def __init__(self) -> None:
        self.abstained: list[bool] = []

    def abstain(self, yes: bool) -> None:
        self.abstained.append(yes)


def test_a_leader_that_hands_over_starts_no_new_term_until_it_stands_again() -> None:
    """A deaf leader hands over (vmha.domain.handover): it stops acting at
    once, asks the coordinator to give the key up, and a round answered
    before that (still "leading") starts no term; once it stands again, a
    round that says it leads does."""
    terms: list[int] = []
    coord = Abstaining()

    async def elected(epoch: int) -> None:
        terms.append(epoch)

    async def gone() -> None: ...

    async def scenario() -> Leadership:
        lead = Leadership(coord, FakeStore(), SystemClock(), 0.01, elected, gone)
        await lead._round()
        await lead.hand_over("it hears 0 of 3 hosts while c2 hears 3 of 3 hosts")
        assert not lead.leading and coord.abstained == [True]
        for _ in range(3):
            await lead._round()
        assert terms == [1]
        lead.abstain(True, "still deaf")  # no change, no call
        lead.abstain(False, "c1 hears 3 of 3 hosts")
        await lead._round()
        return lead

    lead = asyncio.run(scenario())
    assert lead.leading and len(terms) == 2 and coord.abstained == [True, False]
