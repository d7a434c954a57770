"""The simulated world: hosts, agents, BMC state, hypervisors and guests.

The world is the ground truth. It knows which host is powered, which agent
runs, where every VM really has a copy, and it checks the safety
invariants on every change (`vmha.sim.invariants`). The controller sees it
only through the ports (`vmha.sim.adapters`) and through what the agents
send: heartbeats (`controller.heartbeat`) and guest events
(`controller.instance_event`).

Model, in short (times from `SimSettings`, all on the virtual loop):

- An agent sends a heartbeat every `heartbeat_interval_s` (+- a small
  send jitter) over its link. It counts as connected when a heartbeat and
  its ack got through, or when it reaches a majority of its segment's
  peers. It feeds its watchdog while it was connected within
  `agent_isolation_timeout_s`; the watchdog resets the host
  `agent_watchdog_timeout_s` after the last feed (also when the agent
  crashed: the watchdog is armed with nowayout). A reset host stays off
  until `power-on` (or a BMC power-on); a powered-on host runs its agent
  again after `host_boot_s`, with an empty hypervisor.
- Guest faults: `panic` and `vm crash` stop the domain and the agent
  reports `crashed`; `hang` fires the guest watchdog after
  `guest_watchdog_s`, the hypervisor applies the policy's watchdog action
  (reset / poweroff / pause; others do nothing) and the agent reports
  `watchdog`; `app fail` is reported as `app_failed` after the first
  probe's interval x threshold (or `app_detect_s`), `app ok` as `app_ok`.
- Agent reports are queued and resent every tick until the link lets
  them through; reports of an agent that is down are lost.

Used by the runner; talks to the controller only as described above.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vmha.domain.model import InstanceState
from vmha.domain.policy import HAPolicy, WatchdogAction
from vmha.errors import TemporaryError
from vmha.sim.invariants import Invariants
from vmha.sim.log import SimLog
from vmha.sim.network import CONTROLLER, Network
from vmha.sim.scenario import Command, Scenario, SimSettings

RUNNING = frozenset({"running", "paused"})  # states that hold the VM's disks
_STATE = {"running": InstanceState.RUNNING, "paused": InstanceState.PAUSED,
          "stopped": InstanceState.STOPPED, "crashed": InstanceState.CRASHED}
_HYPERVISOR_RESETS = (WatchdogAction.RESET, WatchdogAction.RESET_NOTIFY)


class ControllerLike(Protocol):
    """What the world needs of the controller (the agents' side of it)."""

    def heartbeat(self, host: str, seq: int, sent_at: float) -> None: ...
    async def instance_event(self, instance_id: str, kind: str, detail: str = "") -> None: ...


@dataclass
class Copy:
    """A domain of an instance defined on one host."""

    host: str
    state: str  # running | paused | stopped | crashed
    guest_hung: bool = False
    app_ok: bool = True
    gen: int = 0


@dataclass
class SimVM:
    id: str
    policy: HAPolicy
    home: str | None  # host of the latest start
    copies: dict[str, Copy] = field(default_factory=dict)
    last_fault: float | None = None
    down_since: float | None = None


@dataclass
class SimHost:
    name: str
    segment: str
    powered: bool = True
    agent_up: bool = False
    bmc: str = "ok"  # ok | unreachable | stuck-on
    compute_enabled: bool = True
    seq: int = 0
    last_connected: float = 0.0
    tick: asyncio.TimerHandle | None = None
    watchdog: asyncio.TimerHandle | None = None
    boot: asyncio.TimerHandle | None = None  # power-on in progress
    cutoff: asyncio.TimerHandle | None = None  # accepted BMC power-off in flight
    outbox: list[tuple[str, str, str]] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)


class World:
    def __init__(self, scenario: Scenario, seed: int, log: SimLog,
                 heartbeat_interval_s: float) -> None:
        self.sim: SimSettings = scenario.sim
        self.log = log
        self.interval = heartbeat_interval_s
        self._seed = seed
        self.hosts = {h.name: SimHost(h.name, h.segment) for h in scenario.hosts}
        self.net = Network(list(self.hosts), self.sim.network_base_delay_ms / 1000.0,
                           self.rng)
        self.inv = Invariants(log, {h.name: h.segment for h in scenario.hosts})
        self.vms: dict[str, SimVM] = {}
        for inst in scenario.instances:
            assert inst.host is not None and inst.policy is not None
            vm = SimVM(inst.id, inst.policy, inst.host)
            vm.copies[inst.host] = Copy(inst.host, "running")
            self.vms[inst.id] = vm
        self._rngs = {name: self.rng(f"agent:{name}") for name in self.hosts}
        self.controller: ControllerLike | None = None
        self.errors: list[str] = []
        self.recover_s: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- plumbing ---------------------------------------------------------

    def rng(self, stream: str) -> random.Random:
        return random.Random(f"{self._seed}:{stream}")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def now(self) -> float:
        return self.loop.time()

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a bug here or in the controller: report, keep going
            self.errors.append(f"{self.log.rel():.3f} {fn.__name__}: {exc!r}")

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def hypervisor(self, op: str, vm_id: str, host: str, stopped: bool = False) -> None:
        """A start/reset the hypervisor carries out once it accepted it: the
        caller may give up (be cancelled), the domain still comes up."""
        task = self.spawn(self._hypervisor(op, vm_id, host, stopped))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen by the caller
        await asyncio.shield(task)

    async def _hypervisor(self, op: str, vm_id: str, host: str, stopped: bool) -> None:
        await asyncio.sleep(self.sim.vm_start_s)
        if not self.answers(host):
            raise TemporaryError(f"{op} {vm_id}: host {host} went away during the {op}")
        if op == "start":
            self.start_copy(vm_id, host, stopped)
        else:
            self.reset_copy(vm_id, host)

    def start(self) -> None:
        for host in self.hosts.values():
            self._start_agent(host, first=True)

    def stop(self) -> None:
        for host in self.hosts.values():
            for handle in (host.tick, host.watchdog, host.boot, host.cutoff):
                if handle is not None:
                    handle.cancel()
        for task in list(self._tasks):
            task.cancel()

    # --- agents -----------------------------------------------------------

    def answers(self, host: str) -> bool:
        h = self.hosts[host]
        return h.powered and h.agent_up

    def _start_agent(self, h: SimHost, first: bool = False) -> None:
        h.agent_up = True
        h.last_connected = self.now()
        self._feed(h)
        rng = self._rngs[h.name]
        # Spread the first heartbeats so hosts do not tick in lockstep.
        delay = rng.uniform(0.0, self.interval) if first else 0.0
        h.tick = self.later(delay, self._agent_tick, h)

    def _agent_tick(self, h: SimHost) -> None:
        if not (h.powered and h.agent_up):
            return
        now = self.now()
        h.seq += 1
        connected = False
        delay = self.net.transit(h.name, CONTROLLER)
        if delay is not None:
            self.later(delay, self._deliver_heartbeat, h.name, h.seq, now)
            connected = self.net.transit(CONTROLLER, h.name) is not None
        if not connected:
            connected = self._reaches_peer_majority(h)
        if connected:
            h.last_connected = now
        if now - h.last_connected <= self.sim.agent_isolation_timeout_s:
            self._feed(h)
        self._flush(h)
        jitter = self.sim.agent_send_jitter_s
        period = self.interval + self._rngs[h.name].uniform(-jitter, jitter)
        h.tick = self.later(max(period, 0.001), self._agent_tick, h)

    def _reaches_peer_majority(self, h: SimHost) -> bool:
        peers = [p for p in self.hosts.values() if p.segment == h.segment and p is not h]
        if not peers:
            return False
        reached = sum(
            1 for p in peers if self.answers(p.name) and self.net.round_trip(h.name, p.name)
        )
        return reached * 2 > len(peers)

    def _deliver_heartbeat(self, host: str, seq: int, sent_at: float) -> None:
        if self.controller is not None:
            self.controller.heartbeat(host, seq, sent_at)

    def _feed(self, h: SimHost) -> None:
        if h.watchdog is not None:
            h.watchdog.cancel()
        h.watchdog = self.later(self.sim.agent_watchdog_timeout_s, self._watchdog_fires, h)

    def _watchdog_fires(self, h: SimHost) -> None:
        if not h.powered:
            return
        why = "isolated" if h.agent_up else "not running"
        self.power_off(h.name, f"self-fenced: watchdog fired, agent {why}")

    def report(self, host: str, vm: str, kind: str, detail: str) -> None:
        """The agent on `host` tells the controller about a guest event."""
        h = self.hosts[host]
        if not (h.powered and h.agent_up):
            return
        h.outbox.append((vm, kind, detail))
        self._flush(h)

    def _flush(self, h: SimHost) -> None:
        while h.outbox:
            delay = self.net.transit(h.name, CONTROLLER)
            if delay is None:
                return  # retried on the next tick
            vm, kind, detail = h.outbox.pop(0)
            self.later(delay, self._deliver_event, vm, kind, detail)

    def _deliver_event(self, vm: str, kind: str, detail: str) -> None:
        if self.controller is not None:
            self.spawn(self._call_event(self.controller, vm, kind, detail))

    async def _call_event(self, c: ControllerLike, vm: str, kind: str, detail: str) -> None:
        try:
            await c.instance_event(vm, kind, detail)
        except Exception as exc:  # the controller's bug, reported at the end
            self.errors.append(f"{self.log.rel():.3f} instance_event({vm}, {kind}): {exc!r}")

    # --- power ------------------------------------------------------------

    def power_off(self, host: str, why: str) -> None:
        h = self.hosts[host]
        if not h.powered:
            return
        h.powered, h.agent_up = False, False
        for handle in (h.tick, h.watchdog, h.boot, h.cutoff):
            if handle is not None:
                handle.cancel()
        h.tick = h.watchdog = h.boot = h.cutoff = None
        h.outbox.clear()
        self.log.world(host, f"powered off ({why})")
        for vm in self.vms.values():
            copy = vm.copies.pop(host, None)
            if copy is not None and copy.state in RUNNING:
                self.log.world(vm.id, f"stopped: host {host} powered off")
                self._went_down(vm, host)

    def power_on(self, host: str, why: str) -> None:
        h = self.hosts[host]
        if h.powered:
            return
        h.powered = True
        self.log.world(host, f"powered on ({why}), booting")
        h.boot = self.later(self.sim.host_boot_s, self._booted, h)

    def _booted(self, h: SimHost) -> None:
        h.boot = None
        if h.powered and not h.agent_up:
            self._start_agent(h)
            self.log.world(h.name, "booted, agent running")

    def bmc_power_off(self, host: str, method: str) -> None:
        """A BMC accepted a power-off: the host goes dark a moment later."""
        h = self.hosts[host]
        self.inv.on_power_off(host, method)
        if h.bmc == "stuck-on":
            self.log.world(host, f"bmc accepted {method} power-off but the host stays on")
            return
        if not h.powered:
            self.log.world(host, f"bmc accepted {method} power-off (already off)")
            return
        if h.cutoff is not None:
            self.log.world(host, f"bmc accepted {method} power-off (already going off)")
            return
        delay = self._rngs[host].uniform(self.sim.bmc_power_off_min_s,
                                         self.sim.bmc_power_off_max_s)
        self.log.world(host, f"bmc accepted {method} power-off")
        h.cutoff = self.later(delay, self.power_off, host, f"bmc {method}")

    # --- instances --------------------------------------------------------

    def running_hosts(self, vm: SimVM) -> list[str]:
        return [c.host for c in vm.copies.values() if c.state in RUNNING]

    def _went_down(self, vm: SimVM, host: str) -> None:
        if self.running_hosts(vm) or vm.down_since is not None:
            return
        faults = [t for t in (vm.last_fault, *self.hosts[host].faults[-1:]) if t is not None]
        vm.down_since = max(faults) if faults else self.now()

    def _came_up(self, vm: SimVM) -> None:
        self.inv.on_running_copies(vm.id, self.running_hosts(vm))
        if vm.down_since is not None:
            self.recover_s[vm.id] = round(self.now() - vm.down_since, 3)
            vm.down_since = None

    def start_copy(self, vm_id: str, host: str, stopped: bool) -> None:
        vm = self.vms[vm_id]
        copy = vm.copies.get(host)
        if copy is not None and copy.state in RUNNING and not stopped:
            return  # idempotent: already runs there
        old = vm.home
        self.inv.on_start(vm_id, host, old, old is not None and old != host
                          and old in self.running_hosts(vm))
        copy = vm.copies.setdefault(host, Copy(host, "stopped"))
        copy.gen += 1
        copy.guest_hung, copy.app_ok = False, True
        vm.home = host
        if stopped:
            copy.state = "stopped"
            self.log.world(vm_id, f"defined on {host}, left stopped")
            return
        copy.state = "running"
        self.log.world(vm_id, f"running on {host}")
        self._came_up(vm)
        self.report(host, vm_id, "started", f"started on {host}")

    def stop_copy(self, vm_id: str, host: str) -> None:
        vm = self.vms[vm_id]
        copy = vm.copies.get(host)
        if copy is None or copy.state not in RUNNING:
            return
        copy.state = "stopped"
        copy.gen += 1
        self.log.world(vm_id, f"stopped on {host} (requested)")
        self._went_down(vm, host)

    def reset_copy(self, vm_id: str, host: str) -> None:
        vm = self.vms[vm_id]
        copy = vm.copies.get(host)
        if copy is None:  # like the fake cloud: a reset of nothing starts it
            self.start_copy(vm_id, host, stopped=False)
            return
        was_running = copy.state in RUNNING
        copy.state, copy.guest_hung, copy.app_ok = "running", False, True
        copy.gen += 1
        vm.home = host
        self.log.world(vm_id, f"reset on {host}" if was_running else f"running on {host}")
        self._came_up(vm)
        if not was_running:
            self.report(host, vm_id, "started", f"started on {host}")

    def copy_state(self, vm_id: str, host: str) -> InstanceState:
        copy = self.vms[vm_id].copies.get(host)
        return InstanceState.UNKNOWN if copy is None else _STATE[copy.state]

    def used(self, host: str) -> list[str]:
        """Instances holding resources on `host` (defined there, any state)."""
        return [vm.id for vm in self.vms.values() if host in vm.copies]

    # --- guest faults -----------------------------------------------------

    def _live_copy(self, vm: SimVM) -> Copy | None:
        copy = vm.copies.get(vm.home) if vm.home else None
        return copy if copy is not None and copy.state == "running" else None

    def guest_fault(self, vm_id: str, what: str) -> None:
        vm = self.vms[vm_id]
        copy = self._live_copy(vm)
        if copy is None:
            self.log.world(vm_id, f"{what} ignored: not running")
            return
        vm.last_fault = self.now()
        if what in ("panic", "crash"):
            copy.state = "crashed"
            copy.gen += 1
            detail = "guest kernel panic" if what == "panic" else "QEMU process died"
            self.log.world(vm_id, f"crashed on {copy.host} ({detail})")
            self._went_down(vm, copy.host)
            self.report(copy.host, vm_id, "crashed", detail)
        elif what == "hang":
            copy.guest_hung = True
            self.later(self.sim.guest_watchdog_s, self._guest_watchdog, vm, copy, copy.gen)
        elif what == "app-fail":
            copy.app_ok = False
            self.later(self._app_detect(vm), self._app_check, vm, copy, copy.gen, False)
        elif what == "app-ok":
            copy.app_ok = True
            self.later(self._app_detect(vm) / 3, self._app_check, vm, copy, copy.gen, True)
        elif what == "guest-ok":
            copy.guest_hung = False

    def _app_detect(self, vm: SimVM) -> float:
        if vm.policy.probes:
            probe = vm.policy.probes[0]
            return probe.interval_s * probe.failure_threshold
        return self.sim.app_detect_s

    def _app_check(self, vm: SimVM, copy: Copy, gen: int, ok: bool) -> None:
        if copy.gen != gen or copy.state != "running" or copy.app_ok != ok:
            return
        probe = vm.policy.probes[0] if vm.policy.probes else None
        name = f"{probe.kind.value} probe" if probe else "probe"
        if ok:
            self.report(copy.host, vm.id, "app_ok", f"{name} passes again")
            return
        times = f"{probe.failure_threshold} times in a row" if probe else "repeatedly"
        self.report(copy.host, vm.id, "app_failed", f"{name} failed {times}")

    def _guest_watchdog(self, vm: SimVM, copy: Copy, gen: int) -> None:
        if copy.gen != gen or copy.state != "running" or not copy.guest_hung:
            return
        action = vm.policy.watchdog_action
        if action in _HYPERVISOR_RESETS:
            copy.guest_hung, copy.app_ok = False, True
            copy.gen += 1
            done = "the hypervisor reset the guest"
        elif action is WatchdogAction.POWEROFF:
            copy.state = "stopped"
            copy.gen += 1
            done = "the hypervisor powered the guest off"
            self._went_down(vm, copy.host)
        elif action is WatchdogAction.PAUSE:
            copy.state = "paused"
            done = "the hypervisor paused the guest"
        else:
            done = "no hypervisor action"
        self.log.world(vm.id, f"guest watchdog fired on {copy.host}: {done}")
        self.report(copy.host, vm.id, "watchdog", done)

    # --- commands ---------------------------------------------------------

    def apply(self, cmd: Command) -> None:
        """Apply a world command (not maintenance/operator/controller)."""
        if cmd.verb in ("guest", "app", "vm"):
            what = {"guest": {"panic": "panic", "hang": "hang", "ok": "guest-ok"},
                    "app": {"fail": "app-fail", "ok": "app-ok"},
                    "vm": {"crash": "crash"}}[cmd.verb][cmd.action]
            self.guest_fault(cmd.target, what)
            return
        h = self.hosts[cmd.target]
        if cmd.verb == "power-off" or (cmd.verb, cmd.action) in (
            ("network", "down"), ("network", "loss"), ("network", "delay"),
            ("controller-link", "down"), ("agent", "crash"), ("bmc", "unreachable"),
        ):
            h.faults.append(self.now())
        getattr(self, "_cmd_" + cmd.verb.replace("-", "_"))(h, cmd)

    def _cmd_power_off(self, h: SimHost, cmd: Command) -> None:
        if not h.powered:
            self.log.world(h.name, "already powered off")
        self.power_off(h.name, "power cut")

    def _cmd_power_on(self, h: SimHost, cmd: Command) -> None:
        if h.powered:
            self.log.world(h.name, "already powered on")
        self.power_on(h.name, "power restored")

    def _cmd_network(self, h: SimHost, cmd: Command) -> None:
        link = self.net.link(h.name)
        if cmd.action == "down":
            link.down = True
        elif cmd.action == "up":
            link.down, link.loss, link.delay_s, link.jitter_s = False, 0.0, 0.0, 0.0
        elif cmd.action == "loss":
            link.loss = cmd.numbers[0] / 100.0
        else:
            link.delay_s = cmd.numbers[0] / 1000.0
            link.jitter_s = (cmd.numbers[1] if len(cmd.numbers) > 1 else 0.0) / 1000.0

    def _cmd_controller_link(self, h: SimHost, cmd: Command) -> None:
        self.net.link(h.name).controller_down = cmd.action == "down"

    def _cmd_bmc(self, h: SimHost, cmd: Command) -> None:
        h.bmc = cmd.action

    def _cmd_agent(self, h: SimHost, cmd: Command) -> None:
        if cmd.action == "crash":
            if h.agent_up:
                h.agent_up = False
                if h.tick is not None:
                    h.tick.cancel()
                self.log.world(h.name, "agent crashed; its watchdog is still armed")
        elif not h.powered:
            self.log.world(h.name, "agent not started: host is powered off")
        elif not h.agent_up and h.boot is None:
            self._start_agent(h)
            self.log.world(h.name, "agent started")
