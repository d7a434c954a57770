"""Starting and stopping the host agent (`vmha agent --config agent.toml`).

`main(argv)` is the process entry point used by `python -m vmha.agent` (the
lab starts agents this way: no typer, a small process) and by
`vmha.cli.agent`. It loads the config (ConfigError -> exit 2), picks the
secret (config, else the state file, else registration with the
controller), starts a new boot id, opens the UDP socket, the hypervisor
(when `[hypervisor] uri` is set: domain API, events and inventory to the
controller, isolation `stop-vms` destroys the local domains; with a
controller.url also the application probes and guest-agent pings of its
domains, `vmha.agent.prober`) and the HTTP API, then ticks until
SIGTERM/SIGINT. An agent restart re-attaches: it only
needs its state directory (and its libvirt re-attaches to running QEMUs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vmha import __version__
from vmha.adapters.logs import setup_logging
from vmha.adapters.sdnotify import SdNotifier
from vmha.adapters.system import SystemClock, UuidGen
from vmha.agent.config import AgentConfig, load_agent_config
from vmha.agent.domains import PROBE_KINDS, DomainEvent
from vmha.agent.http import AgentApi
from vmha.agent.register import register
from vmha.agent.runtime import Agent, Identity, StopVms, no_local_domains, run_schedule
from vmha.agent.state import AgentState, load_state, save_state
from vmha.agent.watchdog import DevWatchdog, LabWatchdog, NullWatchdog, Watchdog
from vmha.errors import ConfigError, TemporaryError, Unauthenticated
from vmha.ports import Clock, IdGen

if TYPE_CHECKING:
    from vmha.agent.guestagent import GuestAgent
    from vmha.agent.hypervisor import LibvirtHypervisor
    from vmha.agent.prober import Prober
    from vmha.agent.probesync import ProbeSync
    from vmha.agent.report import EventReporter

log = logging.getLogger("vmha.agent")


def make_watchdog(cfg: AgentConfig) -> Watchdog:
    if cfg.watchdog.backend == "dev":
        return DevWatchdog(cfg.watchdog.device)
    if cfg.watchdog.backend == "lab":
        assert cfg.watchdog.socket is not None
        return LabWatchdog(cfg.watchdog.socket)
    return NullWatchdog()


def registration_body(cfg: AgentConfig, boot_id: bytes) -> dict[str, object]:
    host, port = cfg.api.hostport()
    address = cfg.address or host
    return {
        "host": cfg.host, "segment": cfg.segment, "address": address,
        "capacity": cfg.capacity.model_dump(), "version": __version__,
        "boot_id": boot_id.hex(),
        "api": {"url": f"http://{address}:{port}", "token": cfg.api.token_value()},
    }


async def obtain_secrets(
    cfg: AgentConfig, state: AgentState, boot_id: bytes, clock: Clock
) -> AgentState:
    """Configured secret, else the remembered one, else register (retrying)."""
    configured, seg = cfg.secret_value(), cfg.segment_secret_value()
    if configured:
        return replace(state, secret="", segment_secret=(seg or b"").decode())
    if state.secret:
        return state
    urls = cfg.controller.api_urls()
    if not urls:
        raise ConfigError("secret: none configured and controller.url is empty: cannot register")
    tried = 0
    while True:
        url = urls[tried % len(urls)]
        try:
            reg = await register(url, cfg.controller.token_value(),
                                 registration_body(cfg, boot_id))
        except TemporaryError as exc:
            tried += 1
            if tried % len(urls):  # another controller first, at once
                log.warning("%s; trying %s", exc.detail, urls[tried % len(urls)])
                continue
            log.warning("%s; retrying in %.0f s", exc.detail, exc.delay_s)
            await clock.sleep(exc.delay_s)
            continue
        got_seg = reg.segment_secret or seg or b""
        return replace(state, secret=reg.secret.decode(), segment_secret=got_seg.decode())


@dataclass
class Hypervisor:
    """The parts an agent with a hypervisor runs (all None without one)."""

    hv: LibvirtHypervisor | None = None
    reporter: EventReporter | None = None
    guest_agent: GuestAgent | None = None
    prober: Prober | None = None
    sync: ProbeSync | None = None

    async def stop(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        if self.prober is not None:
            await self.prober.close()
        if self.reporter is not None:
            await self.reporter.stop()
        if self.guest_agent is not None:
            self.guest_agent.close()
        if self.hv is not None:
            await self.hv.close()


async def open_hypervisor(cfg: AgentConfig, boot_id: str, clock: Clock) -> Hypervisor:
    """The host's libvirt, the reporter of its events and the prober of its
    domains (an empty `Hypervisor` without a uri)."""
    if not cfg.hypervisor.uri:
        return Hypervisor()
    try:
        from vmha.agent.guestagent import GuestAgent  # libvirt-python is optional
        from vmha.agent.hypervisor import LibvirtHypervisor
    except ImportError as exc:
        raise ConfigError(f"hypervisor.uri is set but libvirt-python cannot be imported "
                          f"({exc}); install vmha[libvirt] or empty the uri") from exc
    from vmha.agent.prober import Prober  # only agents with a hypervisor report and probe
    from vmha.agent.probesync import ProbeSync
    from vmha.agent.report import EventReporter

    parts = Hypervisor()
    if cfg.controller.api_urls():
        parts.reporter = EventReporter(
            cfg.controller.api_urls(), cfg.host, cfg.controller.token_value(), boot_id,
            inventory=lambda: hv.inventory(),
            inventory_interval_s=cfg.hypervisor.inventory_interval_s)
    else:
        log.warning("controller.url is empty: domain events of %s are logged, not reported, "
                    "and no application is probed", cfg.host)

    def on_event(event: DomainEvent) -> None:
        if event.kind not in PROBE_KINDS:
            log.info("domain %s (%s): %s %s%s", event.name, event.uuid, event.kind,
                     event.detail, " (requested)" if event.requested else "")
        if parts.prober is not None and event.kind not in PROBE_KINDS:
            parts.prober.domain_event(event)
        if parts.reporter is not None:
            parts.reporter.push(event)

    reporter = parts.reporter
    hv = parts.hv = LibvirtHypervisor(cfg.hypervisor.uri, on_event,
                                      on_connect=reporter.inventory_now if reporter else None)
    parts.guest_agent = GuestAgent(hv)
    await hv.open()
    if reporter is not None:
        reporter.start()
    if reporter is not None and cfg.probes.enabled:
        parts.prober = Prober(parts.guest_agent, clock, on_event, cfg.state_dir)
        parts.sync = ProbeSync(cfg.controller.api_urls(), cfg.host,
                               cfg.controller.token_value(), parts.prober, hv.inventory, clock,
                               cfg.state_dir, cfg.probes.refresh_s)
        parts.sync.start()
    return parts


async def run_agent(cfg: AgentConfig, clock: Clock | None = None, ids: IdGen | None = None) -> None:
    clock = clock or SystemClock()
    ids = ids or UuidGen()
    notifier, ticks = SdNotifier(), Ticks()
    pinger = start_systemd_watchdog(notifier, clock, ticks, 3 * cfg.heartbeat_interval_s)
    try:
        await _run(cfg, clock, ids, notifier, ticks)
    finally:
        if pinger is not None:
            pinger.cancel()


async def _run(cfg: AgentConfig, clock: Clock, ids: IdGen, notifier: SdNotifier,
               ticks: Ticks) -> None:
    boot_id = hashlib.sha256(ids.new_id().encode()).digest()[:8]
    state = load_state(cfg.state_dir)
    state = replace(state, boot_count=state.boot_count + 1, boot_id=boot_id.hex())
    state = await obtain_secrets(cfg, state, boot_id, clock)
    save_state(cfg.state_dir, state)
    secret = cfg.secret_value() or state.secret.encode()
    seg = cfg.segment_secret_value() or state.segment_secret.encode() or None
    ident = Identity(cfg.host, cfg.segment, boot_id, secret, seg)
    saved = state.last_contact or None

    def save_contact(at: float) -> None:
        save_state(cfg.state_dir, replace(state, last_contact=at))

    parts = await open_hypervisor(cfg, boot_id.hex(), clock)
    stop_vms: StopVms = parts.hv.stop_all if parts.hv is not None else no_local_domains
    agent = Agent(cfg, ident, clock, make_watchdog(cfg), stop_vms=stop_vms,
                  saved_contact=saved, save_contact=save_contact)
    await agent.open()
    reporter = parts.reporter
    api = AgentApi(agent, cfg.api.token_value(), parts.hv,
                   report_counts=(lambda: reporter.metrics) if reporter is not None else None,
                   guest_agent=parts.guest_agent, prober=parts.prober)
    await api.start(*cfg.api.hostport())
    log.info("agent %s up: boot %s (#%d), heartbeats every %.2f s to %s",
             cfg.host, boot_id.hex(), state.boot_count, cfg.heartbeat_interval_s,
             ", ".join(cfg.controller.heartbeat))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def tick() -> None:
        await agent.tick()
        ticks.last = clock.now()

    ticker = asyncio.ensure_future(run_schedule(clock, cfg.heartbeat_interval_s, tick))
    notifier.ready(f"heartbeats every {cfg.heartbeat_interval_s:g} s")
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        ticker.cancel()
        await api.stop()
        await parts.stop()
        agent.close()
        agent.close_watchdog()
        log.info("agent %s stopped", cfg.host)


class Ticks:
    """When the heartbeat loop last finished a tick (for systemd's watchdog);
    None while the agent is still starting (registering, opening libvirt)."""

    def __init__(self) -> None:
        self.last: float | None = None


def start_systemd_watchdog(notifier: SdNotifier, clock: Clock, ticks: Ticks,
                           stale_s: float) -> asyncio.Task[None] | None:
    """With `WatchdogSec=`: WATCHDOG=1 every half timeout while the heartbeat
    loop ticked within `stale_s`; a stuck loop stops the pings and systemd
    restarts the agent (its hardware watchdog keeps its own deadline)."""
    interval = notifier.ping_interval_s
    if interval is None:
        return None

    async def ping() -> None:
        while True:
            if ticks.last is None or clock.now() - ticks.last <= stale_s:
                notifier.watchdog()
            else:
                log.error("heartbeat loop stalled for %.1f s: no systemd watchdog ping",
                          clock.now() - ticks.last)
            await clock.sleep(interval)

    return asyncio.ensure_future(ping())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmha agent", description="the vmha host agent")
    parser.add_argument("--config", required=True, help="agent TOML file")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    parser.add_argument("--log-format", default="text", choices=("text", "json"),
                        help="json: one JSON object per line")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        cfg = load_agent_config(args.config)
        asyncio.run(run_agent(cfg))
    except ConfigError as exc:
        print(f"vmha agent: {exc.detail}", file=sys.stderr)
        return 2
    except Unauthenticated as exc:
        print(f"vmha agent: {exc.detail}; check controller.token", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"vmha agent: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
