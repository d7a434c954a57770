"""A tiny stand-in controller for the simulator's own unit tests.

It is NOT the engine: it declares a host failed after `dead_after` seconds
without a heartbeat and moves its instances to the first other host of the
segment, either after fencing it through IPMI and reading power OFF
(`careful=True`) or at once (`careful=False`, to prove that the invariant
checker catches unsafe behaviour).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from vmha.domain import commands
from vmha.domain.model import Event, SubjectKind
from vmha.ports import ListQuery, PowerState
from vmha.sim.runner import Ports, RunResult, run_scenario
from vmha.sim.scenario import Scenario, parse_scenario


class StandInbox:
    """The stand-in's door: the commands the simulator sends it."""

    def __init__(self, standin: StandIn) -> None:
        self.s = standin

    async def ask(self, command: Any) -> None:
        if isinstance(command, commands.InstanceEvent):
            await self.s.instance_event(command.instance, command.kind, command.detail)
        elif isinstance(command, commands.FenceAck):
            await self.s.fence_ack(command.host, command.by)
        elif isinstance(command, commands.ResumeSegment):
            await self.s.resume_segment(command.segment, command.by)
        elif isinstance(command, commands.SetMaintenance):
            await self.s.set_maintenance(command.host, command.enabled, command.reason)


class StandIn:
    def __init__(self, ports: Ports, careful: bool = True, dead_after: float = 3.0,
                 act: bool = True) -> None:
        self.inbox = StandInbox(self)
        self.p = ports
        self.act = act
        self.careful = careful
        self.dead_after = dead_after
        self.last: dict[str, float] = {}
        self.seqs: dict[str, list[int]] = {}
        self.guest_events: list[tuple[float, str, str]] = []
        self.failed: set[str] = set()
        self._stop = False

    def heartbeat(self, host: str, seq: int, sent_at: float) -> None:
        self.last[host] = self.p.clock.now()
        self.seqs.setdefault(host, []).append(seq)

    async def instance_event(self, instance_id: str, kind: str, detail: str = "") -> None:
        self.guest_events.append((self.p.clock.now(), instance_id, kind))
        self._emit(f"instance.{kind}", instance_id, detail, SubjectKind.INSTANCE)

    def _emit(self, kind: str, subject: str, reason: str,
              sk: SubjectKind = SubjectKind.HOST, **extra: Any) -> None:
        self.p.store.append_events([Event(kind, subject, self.p.clock.now(), sk,
                                          payload={"reason": reason, **extra})])

    async def run(self) -> None:
        start = self.p.clock.now()
        while not self._stop:
            await asyncio.sleep(0.5)
            now = self.p.clock.now()
            for host in self.p.store.list_hosts(ListQuery(limit=1000)).items:
                seen = self.last.get(host.name, start)
                if self.act and host.name not in self.failed and now - seen > self.dead_after:
                    self.failed.add(host.name)
                    self._emit("host.failed", host.name, f"silent for {now - seen:.1f} s",
                               segment=host.segment)
                    await self._recover(host)

    async def _recover(self, host: Any) -> None:
        if self.careful:
            await self.p.fencers["ipmi"].power_off(host)
            while await self.p.fencers["ipmi"].power_status(host) is not PowerState.OFF:
                await asyncio.sleep(0.5)
            self._emit("host.fenced", host.name, "power off confirmed")
        others = [h.name for h in self.p.store.list_hosts(ListQuery(limit=1000)).items
                  if h.name != host.name and h.name not in self.failed]
        for inst in self.p.store.list_instances(ListQuery(limit=1000)).items:
            if inst.host == host.name and others:
                await self.p.cloud.start_instance(inst, others[0])
                self.p.store.update_instance(replace(inst, host=others[0]))

    async def stop(self) -> None:
        self._stop = True

    async def fence_ack(self, host: str, who: str) -> None:
        self._emit("host.fenced", host, f"acknowledged by {who}")

    async def resume_segment(self, segment: str, who: str) -> None:
        self._emit("segment.recovery_resumed", segment, f"by {who}", SubjectKind.SEGMENT,
                   segment=segment)

    async def set_maintenance(self, host: str, enabled: bool, reason: str = "") -> None:
        self._emit("host.maintenance_on" if enabled else "host.maintenance_off", host, reason)


BASE = """
seed: 7
segments: {s1: {}}
hosts:
  h1: {segment: s1, vcpus: 16, ram_mb: 65536}
  h2: {segment: s1, vcpus: 16, ram_mb: 65536}
  h3: {segment: s1, vcpus: 16, ram_mb: 65536}
instances:
  vm1: {host: h1, vcpus: 2, ram_mb: 4096}
  vm2: {host: h2, vcpus: 2, ram_mb: 4096, policy: {watchdog_action: reset}}
"""


def scenario_with(commands: str, extra: str = "") -> Scenario:
    return parse_scenario(BASE + extra + "commands:\n" + commands)


Simulate = Callable[..., tuple[RunResult, list[StandIn]]]


@pytest.fixture
def base_yaml() -> str:
    return BASE


@pytest.fixture
def simulate() -> Simulate:
    """simulate(commands_yaml, careful=True, until=None, extra="", act=True) runs the
    base cluster with the stand-in controller; returns (result, standins)."""

    def go(commands: str, careful: bool = True, until: float | None = None,
           extra: str = "", act: bool = True) -> tuple[RunResult, list[StandIn]]:
        box: list[StandIn] = []

        def build(ports: Ports) -> StandIn:
            box.append(StandIn(ports, careful=careful, act=act))
            return box[-1]

        result = run_scenario(scenario_with(commands, extra), until=until, engine=(build, 1.0))
        return result, box

    return go


@pytest.fixture
def reckless_engine() -> tuple[Callable[[Ports], StandIn], float]:
    """An engine factory for run_scenario(engine=...) that recovers unsafely."""
    return (lambda ports: StandIn(ports, careful=False)), 1.0
