"""Run a scenario: the real Controller against the simulated world.

`run_scenario(scenario, seed=None, until=None)` builds a FakeStore seeded
with the scenario's segments, hosts and instances, a World, the simulated
ports and a Controller on them, applies the commands at their virtual times
and stops `until` seconds after the start (default: 300 s after the last
command). `controller restart` stops the controller and builds a new one on
the same store (in-memory state lost; the ids generator is shared, like a
database sequence). Returns a `RunResult` with the log lines and the JSON
report. Everything runs on `vmha.sim.loop.run_virtual`: no wall time.

Called by the CLI, the scenario tests, the property test and the
benchmark. `engine` lets unit tests plug a stand-in controller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from vmha.adapters.store.fake import FakeStore
from vmha.adapters.system import SequentialIds
from vmha.controller.inbox import Inbox
from vmha.domain import commands
from vmha.domain.agents import AgentRecord
from vmha.domain.model import Event
from vmha.errors import ValidationError, VmhaError
from vmha.ports import ListQuery
from vmha.sim.adapters import SimCloud, SimFencer, SimProber
from vmha.sim.log import SimLog
from vmha.sim.loop import VirtualClock, run_virtual
from vmha.sim.scenario import Command, Scenario
from vmha.sim.tap import StoreTap
from vmha.sim.world import World

TAIL_S = 300.0
OPERATOR = "admin"  # who the operator commands are attributed to
USER = "user"  # who answers decisions and asks for instance actions
FENCER_METHODS = ("ipmi", "redfish", "fence_agent")


class SimulationError(VmhaError):
    """The controller or the world raised during a run (a bug, not a fault)."""


class EngineLike(Protocol):
    """What the simulator drives: heartbeats directly, everything else as
    commands through the engine's inbox, like the API and the agents do."""

    inbox: Inbox

    def heartbeat(self, host: str, seq: int, sent_at: float) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Ports:
    store: Any
    clock: VirtualClock
    ids: SequentialIds
    fencers: Mapping[str, SimFencer]
    cloud: SimCloud
    prober: SimProber


EngineFactory = Callable[[Ports], EngineLike]


@dataclass(frozen=True)
class RunResult:
    lines: list[str]
    report: dict[str, Any]

    @property
    def invariants_ok(self) -> bool:
        return all(self.report["invariants"].values())


def controller_factory(config: Mapping[str, Any]) -> tuple[EngineFactory, float]:
    """The real Controller with settings from the scenario's `config:`;
    returns the factory and the heartbeat interval the agents must use."""
    from vmha.engine import Engine
    from vmha.engine.settings import ControllerSettings

    try:
        settings = ControllerSettings.from_mapping(config)
    except ValidationError as exc:
        raise ValidationError(f"config.{exc.field}" if exc.field else "config",
                              exc.reason) from None

    def build(p: Ports) -> EngineLike:
        engine = Engine(settings, p.store, p.clock, p.ids, p.fencers, p.cloud, p.prober,
                        inbox=Inbox())
        return cast(EngineLike, engine)

    return build, float(settings.heartbeat_interval_s)


def run_scenario(scenario: Scenario, seed: int | None = None, until: float | None = None,
                 engine: tuple[EngineFactory, float] | None = None) -> RunResult:
    """Run `scenario` on a fresh virtual loop and return its log and report."""
    factory, interval = engine or controller_factory(scenario.config)
    return run_virtual(_simulate(scenario, scenario.seed if seed is None else seed, until,
                                 factory, interval))


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs `to_thread`/`run_in_executor` work at once on the loop's thread:
    a real thread would let the virtual clock jump while it runs."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting coroutine
            future.set_exception(exc)
        return future


async def _simulate(scenario: Scenario, seed: int, until: float | None,
                    factory: EngineFactory, interval: float) -> RunResult:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_InlineExecutor(max_workers=1))
    start = loop.time()
    log = SimLog(loop.time, start)
    world = World(scenario, seed, log, interval)
    store = FakeStore()
    _seed_store(store, scenario)

    tokens: dict[str, str] = {}  # instance -> token of its latest decision

    def on_events(events: Sequence[Event]) -> None:
        for event in events:
            if event.type == "decision.requested":
                tokens[event.subject] = str(event.payload["token"])
            log.event(event)
            world.inv.observe_event(event)

    ports = Ports(StoreTap(store, on_events), VirtualClock(loop), SequentialIds("job"),
                  {m: SimFencer(world, m) for m in FENCER_METHODS}, SimCloud(world),
                  SimProber(world))
    session = _Session(factory, ports, world, log)
    session.tokens = tokens
    session.start()
    world.start()
    end = scenario.last_command_at + TAIL_S if until is None else until
    for cmd in scenario.commands:
        if cmd.at > end:
            break
        await asyncio.sleep(max(0.0, start + cmd.at - loop.time()))
        await session.apply(cmd)
    await asyncio.sleep(max(0.0, start + end - loop.time()))
    await session.stop()
    world.stop()
    errors = world.errors + session.errors
    if errors:
        raise SimulationError("; ".join(errors[:5]))
    return RunResult(log.render(), _report(store, world, log, end))


def _seed_store(store: FakeStore, scenario: Scenario) -> None:
    for segment in scenario.segments:
        store.create_segment(segment)
    for host in scenario.hosts:
        store.create_host(host)
        # Every simulated host runs an agent: registered, so it is watched.
        store.save_agent(AgentRecord(host.name, f"sim-secret-of-{host.name}"))
    for instance in scenario.instances:
        store.create_instance(instance)


class _Session:
    """The current controller: start, stop, restart, commands for it."""

    def __init__(self, factory: EngineFactory, ports: Ports, world: World, log: SimLog) -> None:
        self._factory = factory
        self._ports = ports
        self._world = world
        self._log = log
        self.errors: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._engine: EngineLike | None = None
        self._side: set[asyncio.Task[Any]] = set()
        self.tokens: dict[str, str] = {}

    def start(self) -> None:
        self._engine = self._factory(self._ports)
        self._world.controller = self._engine
        self._task = asyncio.get_running_loop().create_task(self._engine.run())
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(f"{self._log.rel():.3f} controller.run crashed: "
                               f"{task.exception()!r}")

    async def stop(self) -> None:
        engine, task = self._engine, self._task
        self._world.controller = None
        self._engine = self._task = None
        if engine is None or task is None:
            return
        try:
            await asyncio.wait_for(engine.stop(), 30.0)
            await asyncio.wait_for(asyncio.shield(task), 30.0)
        except TimeoutError:
            task.cancel()
        for side in list(self._side):
            side.cancel()

    async def apply(self, cmd: Command) -> None:
        self._log.inject(cmd.target or "controller", _inject_text(cmd))
        if cmd.verb == "controller":
            await self.stop()
            self.start()
            self._log.world("controller", "new controller started (in-memory state lost)")
        elif cmd.verb in ("maintenance", "operator"):
            self._spawn(self._operator(cmd))
        elif cmd.verb in ("decide", "action"):
            self._spawn(self._user(cmd))
        else:
            self._world.apply(cmd)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _operator(self, cmd: Command) -> None:
        engine = self._engine
        if engine is None:
            return
        try:
            await engine.inbox.ask(_operator_command(cmd))
        except VmhaError as exc:  # refused by the controller: worth seeing, not a bug
            self._log.world(cmd.target, f"controller refused {cmd.text!r}: {exc}")
        except Exception as exc:
            self.errors.append(f"{self._log.rel():.3f} {cmd.text}: {exc!r}")


    async def _user(self, cmd: Command) -> None:
        """A user's answer to a decision, or an instance action."""
        engine = self._engine
        if engine is None:
            return
        words = cmd.action.split()
        try:
            if cmd.verb == "decide":
                token = self.tokens.get(cmd.target, f"no-decision.{cmd.target}")
                await engine.inbox.ask(commands.Decide(token, words[0], USER))
            else:
                target = words[1] if len(words) > 1 else None
                await engine.inbox.ask(commands.InstanceAction(cmd.target, words[0], target,
                                                               USER))
        except VmhaError as exc:  # refused by the controller: worth seeing, not a bug
            self._log.world(cmd.target, f"controller refused {cmd.text!r}: {exc}")
        except Exception as exc:
            self.errors.append(f"{self._log.rel():.3f} {cmd.text}: {exc!r}")


def _operator_command(cmd: Command) -> commands.Command:
    """`maintenance H on|off` and `operator fence-ack|fence|resume ...` as
    the commands the API would send."""
    if cmd.verb == "maintenance":
        return commands.SetMaintenance(cmd.target, cmd.action == "on",
                                       f"maintenance set by {OPERATOR}", OPERATOR)
    if cmd.action == "fence-ack":
        return commands.FenceAck(cmd.target, OPERATOR, force=cmd.text.endswith(" force"))
    if cmd.action == "fence":
        words = cmd.text.split()
        return commands.FenceHost(cmd.target, OPERATOR, words[3] if len(words) > 3 else None)
    return commands.ResumeSegment(cmd.target, OPERATOR)


def _inject_text(cmd: Command) -> str:
    """The command without its subject: `power-off`, `network loss 30`..."""
    words = cmd.text.split()
    if cmd.verb == "controller":
        return "restart"
    if cmd.verb == "operator":
        return " ".join([words[1], *words[3:]])
    return " ".join([words[0], *words[2:]])


def _report(store: FakeStore, world: World, log: SimLog, end: float) -> dict[str, Any]:
    hosts = {h.name: {"state": h.state.value, "powered": world.hosts[h.name].powered}
             for h in _all(store.list_hosts)}
    restarts: dict[str, int] = {}
    for _, e in log.events:
        if e.type == "instance.restarted":
            restarts[e.subject] = restarts.get(e.subject, 0) + 1
    instances = {
        i.id: {"host": i.host, "state": i.state.value, "restarts": restarts.get(i.id, 0),
               "running_on": sorted(world.running_hosts(world.vms[i.id]))}
        for i in _all(store.list_instances)
    }
    return {
        "end_time": round(end, 3),
        "hosts": hosts,
        "instances": instances,
        "events": log.events_json(),
        "invariants": world.inv.summary(),
        "violations": [{"t": v.t, "invariant": v.name, "subject": v.subject, "what": v.what}
                       for v in world.inv.violations],
        "metrics": {"detect_s": _detect_s(world, log), "recover_s": dict(world.recover_s)},
    }


def _all(list_fn: Callable[[ListQuery], Any]) -> list[Any]:
    """Every item of a paged store listing."""
    items: list[Any] = []
    marker: str | None = None
    while True:
        page = list_fn(ListQuery(limit=1000, marker=marker))
        items.extend(page.items)
        if page.next_marker is None:
            return items
        marker = page.next_marker


def _detect_s(world: World, log: SimLog) -> dict[str, float]:
    """Per host: first host.failed after a fault minus that fault's time."""
    out: dict[str, float] = {}
    for t, e in log.events:
        if e.type != "host.failed" or e.subject in out or e.subject not in world.hosts:
            continue
        faults = [log.rel(f) for f in world.hosts[e.subject].faults if log.rel(f) <= t]
        if faults:
            out[e.subject] = round(t - faults[-1], 3)
    return out
