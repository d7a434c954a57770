"""The simulated world: hosts, agents, BMC state, hypervisors and guests.

The world is the ground truth. It knows which host is powered, which agent
runs, where every VM really has a copy, and it checks the safety
invariants on every change (`vmha.sim.invariants`). The controller sees it
only through the ports (`vmha.sim.adapters`) and through what the agents
send: heartbeats (`controller.heartbeat`) and guest events
(`controller.instance_event`).

Model, in short (times from `SimSettings`, all on the virtual loop):

- An agent sends a heartbeat every `heartbeat_interval_s` (+- a small
  send jitter) over its link. Whether it feeds its watchdog is decided by
  the shipped agent's own rule (`vmha.agent.isolation.IsolationMonitor`,
  the code the real agent runs): contact is a heartbeat whose ack got
  back, or probe replies from a majority of its segment counting itself
  (probes go out once the controller was silent for 1.5 intervals, as the
  agent sends them); a contact lasts `agent_contact_window_s` (default 3
  intervals, the agent's); after `agent_isolation_timeout_s` without
  contact the agent takes its isolation action (`reboot`: it stops feeding
  for good; `none`: it always feeds). The watchdog resets the host
  `agent_watchdog_timeout_s` after the last feed (also when the agent
  crashed: the watchdog is armed with nowayout). A reset host stays off
  until `power-on` (or a BMC power-on); a powered-on host runs its agent
  again after `host_boot_s`, with an empty hypervisor.
- Guest faults: `panic` and `vm crash` stop the domain and the agent
  reports `crashed`; `hang` fires the guest watchdog after
  `guest_watchdog_s`, the hypervisor applies the policy's watchdog action
  (reset / poweroff / pause; others do nothing) and the agent reports
  `watchdog`; `freeze` is a hang without a watchdog device: with
  `guest_ping_s` set the agent reports `guest_unresponsive` after
  `guest_ping_s` x `guest_ping_failures`; `app fail` is reported as
  `app_failed` after the first probe's interval x threshold (or
  `app_detect_s`), `app ok` as `app_ok`. An in-guest command (`exec:`
  step) restarts an application that failed with `app fail` (not one with
  `app fail-hard`: it exits 0 all the same) and fails in a hung guest; a reset, restart or reboot
  clears every guest and application fault. Once the application works
  again the agent reports `app_ok` after the probe's interval x
  success_threshold (or a third of `app_detect_s`).
- Agent reports are queued and resent every tick until the link lets
  them through; reports of an agent that is down are lost.
- The cloud's compute service of a host (`compute H ...`): `fail-moves`
  accepts a start there and then fails it (nothing runs; its state reads
  ERROR, as Nova's evacuation ending in NoValidHost); `refuse-enable`
  refuses to enable the service again (as Nova keeps a host forced down
  until its evacuations are completed); `ok` undoes both.

Used by the runner; talks to the controller only as described above.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vmha.agent.isolation import IsolationMonitor, initial_contact
from vmha.agent.runtime import STARTUP_GRACE
from vmha.domain.commands import InstanceEvent
from vmha.domain.isolation import majority
from vmha.domain.model import InstanceState
from vmha.domain.policy import HAPolicy, WatchdogAction
from vmha.errors import TemporaryError
from vmha.sim.invariants import WARM_S, Guarding, Invariants
from vmha.sim.log import SimLog
from vmha.sim.network import CONTROLLER, Network
from vmha.sim.scenario import Command, Scenario, SimSettings

RUNNING = frozenset({"running", "paused"})  # states that hold the VM's disks
_STATE = {"running": InstanceState.RUNNING, "paused": InstanceState.PAUSED,
          "stopped": InstanceState.STOPPED, "crashed": InstanceState.CRASHED}
_HYPERVISOR_RESETS = (WatchdogAction.RESET, WatchdogAction.RESET_NOTIFY)


class AgentsInbox(Protocol):
    async def ask(self, command: InstanceEvent) -> Any: ...


class ControllerLike(Protocol):
    """What the world needs of the controller (the agents' side of it):
    heartbeats, and guest events as commands through its inbox."""

    @property
    def inbox(self) -> AgentsInbox: ...

    def heartbeat(self, host: str, seq: int, sent_at: float) -> None: ...


@dataclass
class Copy:
    """A domain of an instance defined on one host."""

    host: str
    state: str  # running | paused | stopped | crashed
    guest_hung: bool = False
    app_ok: bool = True
    app_hard: bool = False  # an in-guest restart does not fix it
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
    compute: str = "ok"  # ok | fail-moves | refuse-enable (the cloud's compute service)
    seq: int = 0
    isolation: IsolationMonitor | None = None  # the running agent's (None: not running)
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
        self.inv = Invariants(log, {h.name: h.segment for h in scenario.hosts}, self,
                              _guarding(scenario))
        self._cut_since: dict[str, float] = {}  # host -> when its network went down
        self._dirty: set[str] = set()  # hosts whose link was lossy or slow in this run
        self._link_changed: dict[str, float] = {}  # host -> its controller link's last change
        self._started = 0.0
        self._restarts = [c.at for c in scenario.commands if c.verb == "controller"]
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
        self.failed_moves: set[tuple[str, str]] = set()  # (vm, host): the cloud failed it
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
        if op == "start" and self.hosts[host].compute == "fail-moves":
            self.failed_moves.add((vm_id, host))
            self.log.world(vm_id, f"move to {host} accepted, then failed there")
            return
        if op == "start":
            self.start_copy(vm_id, host, stopped)
        else:
            self.reset_copy(vm_id, host)

    def start(self) -> None:
        self._started = self.now()
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
        peers = [p.name for p in self.hosts.values() if p.segment == h.segment and p is not h]
        window = self.sim.agent_contact_window_s or 3 * self.interval
        # as the agent starts: a short grace, never past the contact it saved
        saved = h.isolation.last_contact() if h.isolation is not None else None
        start = initial_contact(self.now(), saved, window, STARTUP_GRACE * self.interval)
        h.isolation = IsolationMonitor(peers, window, self.sim.agent_isolation_timeout_s,
                                       self.sim.agent_isolation_action, start)
        self._feed(h)
        rng = self._rngs[h.name]
        # Spread the first heartbeats so hosts do not tick in lockstep.
        delay = rng.uniform(0.0, self.interval) if first else 0.0
        h.tick = self.later(delay, self._agent_tick, h)

    def _agent_tick(self, h: SimHost) -> None:
        """One tick of the agent (vmha.agent.runtime.Agent.tick): heartbeat,
        probes when the controller has been silent, the isolation verdict."""
        monitor = h.isolation
        if not (h.powered and h.agent_up) or monitor is None:
            return
        now = self.now()
        h.seq += 1
        delay = self.net.transit(h.name, CONTROLLER)
        if delay is not None:
            self.later(delay, self._deliver_heartbeat, h.name, h.seq, now)
            if self.net.transit(CONTROLLER, h.name) is not None:
                monitor.controller_contact(now)  # the ack came back
        if monitor.controller_silent_for(now) > 1.5 * self.interval:
            self._probe_peers(h, monitor, now)
        if monitor.evaluate(now).feed:
            self._feed(h)
        self._flush(h)
        jitter = self.sim.agent_send_jitter_s
        period = self.interval + self._rngs[h.name].uniform(-jitter, jitter)
        h.tick = self.later(max(period, 0.001), self._agent_tick, h)

    def _probe_peers(self, h: SimHost, monitor: IsolationMonitor, now: float) -> None:
        """Each peer whose agent answers over the network is a contact."""
        for p in self.hosts.values():
            if p.segment != h.segment or p is h:
                continue
            if self.answers(p.name) and self.net.round_trip(h.name, p.name) is not None:
                monitor.peer_contact(p.name, now)

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
            await c.inbox.ask(InstanceEvent(vm, kind, detail))
        except Exception as exc:  # the controller's bug, reported at the end
            self.errors.append(f"{self.log.rel():.3f} instance_event({vm}, {kind}): {exc!r}")

    # --- power ------------------------------------------------------------

    def power_off(self, host: str, why: str) -> None:
        h = self.hosts[host]
        if not h.powered:
            return
        h.powered, h.agent_up = False, False
        self.inv.on_health_change(host, self.now())
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
        self.inv.on_health_change(h.name, self.now())
        if h.powered and not h.agent_up:
            self._start_agent(h)
            self.log.world(h.name, "booted, agent running")

    # --- ground truth for the invariants ------------------------------------

    def healthy(self, host: str) -> bool:
        """Powered, agent running, a clean link (its controller link aside)."""
        h, link = self.hosts[host], self.net.link(host)
        return (h.powered and h.agent_up and not link.down and link.loss == 0
                and link.delay_s == 0 and link.jitter_s == 0)

    def alive(self, host: str) -> bool:
        return self.hosts[host].powered

    def in_contact(self, host: str) -> bool:
        """Contact by its agent's rule (vmha.domain.isolation), as the network
        really is: its controller link up, or a majority of its segment
        surely reachable (peers `healthy`: powered, agent running, a clean
        link). A host without it may fence itself (through a lossy peer link
        contact is a matter of luck, for its agent as for the controller's
        peer rounds): fencing it too harms nothing it serves."""
        h, link = self.hosts[host], self.net.link(host)
        if link.down:
            return False
        if not link.controller_down:
            return True
        peers = [p for p in self.hosts.values() if p.segment == h.segment and p.name != host]
        return majority(len(peers), sum(1 for p in peers if self.healthy(p.name)))

    def cut_off_since(self, host: str) -> float | None:
        """Since when the powered-on host's network is down, if its link had
        been clean and its health and its controller link unchanged (and up)
        for WARM_S before, and never lossy or slow in this run (None otherwise:
        the controller may rightly have judged it earlier or later)."""
        since = self._cut_since.get(host)
        return since if since is not None and self.hosts[host].powered else None

    def _track_cut(self, h: SimHost, action: str) -> None:
        now = self.now()
        if action in ("loss", "delay"):
            self._dirty.add(h.name)
        elif action == "down" and h.name not in self._cut_since:
            rel = self.log.rel(now)
            restarted = max((at for at in self._restarts if at <= rel), default=-WARM_S)
            changed = max(self.inv.health_changed(h.name), self._started,
                          self._link_changed.get(h.name, float("-inf")))
            warm = (now - changed >= WARM_S and rel - restarted >= WARM_S
                    and not self.net.link(h.name).controller_down)
            if warm and h.name not in self._dirty and h.powered and h.agent_up:
                self._cut_since[h.name] = now
        elif action == "up":
            self._cut_since.pop(h.name, None)

    def bmc_power_off(self, host: str, method: str, sent_at: float | None = None) -> None:
        """A BMC accepted a power-off (sent at `sent_at`): the host goes dark
        a moment later."""
        h = self.hosts[host]
        self.inv.on_power_off(host, method, sent_at)
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
        app_failed = not copy.app_ok
        copy.gen += 1
        copy.guest_hung, copy.app_ok, copy.app_hard = False, True, False
        vm.home = host
        if stopped:
            copy.state = "stopped"
            self.log.world(vm_id, f"defined on {host}, left stopped")
            return
        copy.state = "running"
        self.log.world(vm_id, f"running on {host}")
        self._came_up(vm)
        self.report(host, vm_id, "started", f"started on {host}")
        if app_failed:  # the agent's probes pass again
            self.later(self._app_recovery(vm), self._app_check, vm, copy, copy.gen, True)

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
        was_running, app_failed = copy.state in RUNNING, not copy.app_ok
        copy.state, copy.guest_hung, copy.app_ok, copy.app_hard = "running", False, True, False
        copy.gen += 1
        vm.home = host
        self.log.world(vm_id, f"reset on {host}" if was_running else f"running on {host}")
        self._came_up(vm)
        if not was_running:
            self.report(host, vm_id, "started", f"started on {host}")
        if app_failed:  # the agent's probes pass again
            self.later(self._app_recovery(vm), self._app_check, vm, copy, copy.gen, True)

    def copy_state(self, vm_id: str, host: str) -> InstanceState:
        copy = self.vms[vm_id].copies.get(host)
        if copy is None:
            return InstanceState.ERROR if (vm_id, host) in self.failed_moves else \
                InstanceState.UNKNOWN
        return _STATE[copy.state]

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
        elif what == "freeze":
            copy.guest_hung = True
            if vm.policy.guest_ping_s:
                after = vm.policy.guest_ping_s * vm.policy.guest_ping_failures
                self.later(after, self._ping_check, vm, copy, copy.gen)
        elif what in ("app-fail", "app-fail-hard"):
            copy.app_ok, copy.app_hard = False, what == "app-fail-hard"
            self.later(self._app_detect(vm), self._app_check, vm, copy, copy.gen, False)
        elif what == "app-ok":
            copy.app_ok = True
            self.later(self._app_recovery(vm), self._app_check, vm, copy, copy.gen, True)
        elif what == "guest-ok":
            copy.guest_hung = False

    def _app_detect(self, vm: SimVM) -> float:
        if vm.policy.probes:
            probe = vm.policy.probes[0]
            return probe.interval_s * probe.failure_threshold
        return self.sim.app_detect_s

    def _app_recovery(self, vm: SimVM) -> float:
        if vm.policy.probes:
            probe = vm.policy.probes[0]
            return probe.interval_s * probe.success_threshold
        return self.sim.app_detect_s / 3

    def _ping_check(self, vm: SimVM, copy: Copy, gen: int) -> None:
        if copy.gen != gen or copy.state != "running" or not copy.guest_hung:
            return
        self.report(copy.host, vm.id, "guest_unresponsive",
                    f"guest-ping failed {vm.policy.guest_ping_failures} times in a row")

    def guest_exec(self, vm_id: str, host: str) -> tuple[bool, str]:
        """An in-guest command (the application's restart): (exit 0, what)."""
        vm = self.vms[vm_id]
        copy = vm.copies.get(host)
        if copy is None or copy.state != "running" or copy.guest_hung:
            return False, "the guest agent did not answer"
        if copy.app_ok:
            return True, "exit 0"
        if copy.app_hard:  # the command thinks it worked; the probes know better
            self.log.world(vm_id, f"in-guest restart on {host} did not help")
            return True, "exit 0"
        copy.app_ok = True
        self.log.world(vm_id, f"application restarted inside the guest on {host}")
        self.later(self._app_recovery(vm), self._app_check, vm, copy, copy.gen, True)
        return True, "exit 0"

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
            what = {"guest": {"panic": "panic", "hang": "hang", "freeze": "freeze",
                              "ok": "guest-ok"},
                    "app": {"fail": "app-fail", "fail-hard": "app-fail-hard", "ok": "app-ok"},
                    "vm": {"crash": "crash"}}[cmd.verb][cmd.action]
            self.guest_fault(cmd.target, what)
            return
        h = self.hosts[cmd.target]
        if cmd.verb == "controller-link":
            self._link_changed[h.name] = self.now()
        if cmd.verb == "network":
            self._track_cut(h, cmd.action)
        if cmd.verb in ("power-off", "power-on", "network", "agent"):
            self.inv.on_health_change(h.name, self.now())
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

    def _cmd_compute(self, h: SimHost, cmd: Command) -> None:
        h.compute = cmd.action

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


def _guarding(scenario: Scenario) -> Guarding:
    """The guard's settings and the operator actions that lift it."""
    overrides = tuple(
        (c.at, c.target if c.verb == "operator" else scenario.host(c.target).segment)
        for c in scenario.commands
        if (c.verb == "operator" and c.action == "resume") or c.verb == "maintenance")
    fences = tuple((c.at, c.target) for c in scenario.commands
                   if c.verb == "operator" and c.action == "fence")
    return Guarding({s.name: s.mass_failure_threshold for s in scenario.segments},
                    float(scenario.config.get("mass_failure_window_s", 60.0)), overrides,
                    fences)
