"""A tiny world for engine tests: FakeStore, scriptable fakes, agents that
heartbeat on the virtual clock. No simulator: each test scripts its faults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from vmha.adapters.cloud.fake import FakeCloud
from vmha.adapters.fencing.fake import FakeFencer
from vmha.adapters.peer.fake import FakePeerProber
from vmha.adapters.store.fake import FakeStore
from vmha.adapters.system import SequentialIds
from vmha.controller.inbox import Inbox
from vmha.domain.agents import AgentRecord
from vmha.domain.commands import Command
from vmha.domain.model import Capacity, Host, Instance, RecoveryMethod, Segment
from vmha.domain.policy import HAPolicy
from vmha.engine import ControllerSettings, Engine
from vmha.ports import EventQuery, list_all
from vmha.sim.loop import VirtualClock


@dataclass
class World:
    settings: ControllerSettings = field(default_factory=ControllerSettings)
    store: FakeStore = field(default_factory=FakeStore)
    fencer: FakeFencer = field(default_factory=FakeFencer)
    cloud: FakeCloud = field(default_factory=FakeCloud)
    prober: FakePeerProber = field(default_factory=FakePeerProber)
    ids: SequentialIds = field(default_factory=lambda: SequentialIds("job"))
    silent: set[str] = field(default_factory=set)  # hosts whose heartbeats stop
    controller: Engine | None = None
    task: asyncio.Task[None] | None = None
    agents: list[asyncio.Task[None]] = field(default_factory=list)
    # when set, agents' heartbeats go through it (like `vmha serve`'s intake)
    source: Any = None

    def add_cluster(
        self, hosts: Iterable[str], method: RecoveryMethod = RecoveryMethod.AUTO,
        reserved: Iterable[str] = (), vcpus: int = 16, ram_mb: int = 32768,
        levels: tuple[tuple[str, ...], ...] = (("ipmi",), ("agent_watchdog",)),
        threshold: float = 0.5,
    ) -> None:
        self.store.create_segment(Segment("s1", recovery_method=method,
                                          mass_failure_threshold=threshold))
        for name in hosts:
            self.store.create_host(Host(name, "s1", capacity=Capacity(vcpus, ram_mb),
                                        reserved=name in set(reserved), fence_levels=levels))
            self.store.save_agent(AgentRecord(name, f"secret-of-{name}-0123456789"))

    def add_vm(self, vid: str, host: str, vcpus: int = 2, ram_mb: int = 2048,
               priority: int = 500, **policy: object) -> None:
        pol = HAPolicy.from_dict({"priority": priority, **policy})
        self.store.create_instance(Instance(vid, vid, host, resources=Capacity(vcpus, ram_mb),
                                            policy=pol))
        self.cloud.running.setdefault(vid, set()).add(host)

    def start(self) -> Engine:
        clock = VirtualClock()
        self.controller = Engine(self.settings, self.store, clock, self.ids,
                                 {"ipmi": self.fencer}, self.cloud, self.prober, inbox=Inbox(),
                                 heartbeats=self.source)
        self.task = asyncio.ensure_future(self.controller.run())
        if not self.agents:
            for host in sorted(h.name for h in list_all(self.store.list_hosts)):
                self.agents.append(asyncio.ensure_future(self._agent(host, clock)))
        return self.controller

    async def _agent(self, host: str, clock: VirtualClock) -> None:
        seq = 0
        while True:
            if host not in self.silent and self.source is not None:
                self.source.send(host, seq, clock.now())
            elif host not in self.silent and self.controller is not None:
                self.controller.heartbeat(host, seq, clock.now())
            seq += 1
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def ask(self, command: Command) -> Any:
        """Send `command` through the running engine's inbox (as the API does)."""
        assert self.controller is not None and self.controller.inbox is not None
        return await cast(Inbox, self.controller.inbox).ask(command)

    async def stop_controller(self) -> None:
        assert self.controller is not None and self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.controller = None

    async def close(self) -> None:
        if self.controller is not None:
            await self.stop_controller()
        for agent in self.agents:
            agent.cancel()
        await asyncio.gather(*self.agents, return_exceptions=True)

    def power_off(self, host: str) -> None:
        """The host dies: no heartbeats, peers cannot reach it, VMs gone."""
        self.silent.add(host)
        self.prober.cut(host)
        for hosts in self.cloud.running.values():
            hosts.discard(host)

    def events(self, prefix: str = "") -> list[tuple[str, str]]:
        evs = self.store.list_events(EventQuery(limit=10000))
        return [(e.type, e.subject) for e in evs if e.type.startswith(prefix)]

    def event_times(self, etype: str, subject: str) -> list[float]:
        evs = self.store.list_events(EventQuery(limit=10000))
        return [e.time for e in evs if e.type == etype and e.subject == subject]

    def host_state(self, name: str) -> str:
        return self.store.get_host(name).state.value

    def placement(self, vid: str) -> tuple[str | None, str]:
        inst = self.store.get_instance(vid)
        return inst.host, inst.state.value
