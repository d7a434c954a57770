"""Starting and stopping the host agent (`vmha agent --config agent.toml`).

`main(argv)` is the process entry point used by `python -m vmha.agent` (the
lab starts agents this way: no typer, a small process) and by
`vmha.cli.agent`. It loads the config (ConfigError -> exit 2), picks the
secret (config, else the state file, else registration with the
controller), starts a new boot id, opens the UDP socket, the hypervisor
(when `[hypervisor] uri` is set: domain API, events and inventory to the
controller, isolation `stop-vms` destroys the local domains) and the HTTP
API, then ticks until SIGTERM/SIGINT. An agent restart re-attaches: it only
needs its state directory (and its libvirt re-attaches to running QEMUs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from vmha import __version__
from vmha.adapters.system import SystemClock, UuidGen
from vmha.agent.config import AgentConfig, load_agent_config
from vmha.agent.domains import DomainEvent
from vmha.agent.http import AgentApi
from vmha.agent.register import register
from vmha.agent.runtime import Agent, Identity, StopVms, no_local_domains, run_schedule
from vmha.agent.state import AgentState, load_state, save_state
from vmha.agent.watchdog import DevWatchdog, LabWatchdog, NullWatchdog, Watchdog
from vmha.errors import ConfigError, TemporaryError, Unauthenticated
from vmha.ports import Clock, IdGen

if TYPE_CHECKING:
    from vmha.agent.hypervisor import LibvirtHypervisor
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
    if not cfg.controller.url:
        raise ConfigError("secret: none configured and controller.url is empty: cannot register")
    while True:
        try:
            reg = await register(cfg.controller.url, cfg.controller.token_value(),
                                 registration_body(cfg, boot_id))
        except TemporaryError as exc:
            log.warning("%s; retrying in %.0f s", exc.detail, exc.delay_s)
            await clock.sleep(exc.delay_s)
            continue
        got_seg = reg.segment_secret or seg or b""
        return replace(state, secret=reg.secret.decode(), segment_secret=got_seg.decode())


async def open_hypervisor(
    cfg: AgentConfig, boot_id: str
) -> tuple[LibvirtHypervisor | None, EventReporter | None]:
    """The host's libvirt and the reporter of its events (None, None without a uri)."""
    if not cfg.hypervisor.uri:
        return None, None
    try:
        from vmha.agent.hypervisor import LibvirtHypervisor  # libvirt-python is optional
    except ImportError as exc:
        raise ConfigError(f"hypervisor.uri is set but libvirt-python cannot be imported "
                          f"({exc}); install vmha[libvirt] or empty the uri") from exc
    from vmha.agent.report import EventReporter  # only agents with a hypervisor report

    reporter: EventReporter | None = None
    if cfg.controller.url:
        reporter = EventReporter(cfg.controller.url, cfg.host, cfg.controller.token_value(),
                                 boot_id, inventory=lambda: hv.inventory(),
                                 inventory_interval_s=cfg.hypervisor.inventory_interval_s)
    else:
        log.warning("controller.url is empty: domain events of %s are logged, not reported",
                    cfg.host)

    def on_event(event: DomainEvent) -> None:
        log.info("domain %s (%s): %s %s%s", event.name, event.uuid, event.kind, event.detail,
                 " (requested)" if event.requested else "")
        if reporter is not None:
            reporter.push(event)

    hv = LibvirtHypervisor(cfg.hypervisor.uri, on_event,
                           on_connect=reporter.inventory_now if reporter else None)
    await hv.open()
    if reporter is not None:
        reporter.start()
    return hv, reporter


async def run_agent(cfg: AgentConfig, clock: Clock | None = None, ids: IdGen | None = None) -> None:
    clock = clock or SystemClock()
    ids = ids or UuidGen()
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

    hv, reporter = await open_hypervisor(cfg, boot_id.hex())
    stop_vms: StopVms = hv.stop_all if hv is not None else no_local_domains
    agent = Agent(cfg, ident, clock, make_watchdog(cfg), stop_vms=stop_vms,
                  saved_contact=saved, save_contact=save_contact)
    await agent.open()
    api = AgentApi(agent, cfg.api.token_value(), hv)
    await api.start(*cfg.api.hostport())
    log.info("agent %s up: boot %s (#%d), heartbeats every %.2f s to %s",
             cfg.host, boot_id.hex(), state.boot_count, cfg.heartbeat_interval_s,
             ", ".join(cfg.controller.heartbeat))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticker = asyncio.ensure_future(run_schedule(clock, cfg.heartbeat_interval_s, agent.tick))
    try:
        await stop.wait()
    finally:
        ticker.cancel()
        await api.stop()
        if reporter is not None:
            await reporter.stop()
        if hv is not None:
            await hv.close()
        agent.close()
        agent.close_watchdog()
        log.info("agent %s stopped", cfg.host)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmha agent", description="the vmha host agent")
    parser.add_argument("--config", required=True, help="agent TOML file")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
