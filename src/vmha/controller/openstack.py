"""Wiring of the OpenStack cloud adapter for `vmha serve` (composition root).

`build_openstack(cfg)` turns `[openstack]` into the adapter's values,
connects, and validates the login at start: a wrong password, an unknown
clouds.yaml entry or an unreachable auth_url is a ConfigError whose one
line names the setting, so `vmha serve` exits 2 before it serves anything.
`InventorySync` reads Nova and hands what it found to the engine through
the controller's inbox (the engine is the one writer of hosts and
instances). Never logs a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from vmha.adapters.cloud.openstack import (
    Nova,
    OpenStackAuth,
    OpenStackCloud,
    OpenStackOptions,
    connect,
    validate,
)
from vmha.adapters.cloud.openstack_inventory import Snapshot, read_snapshot, vmha_name
from vmha.adapters.cloud.openstack_notify import NovaListener
from vmha.config import OpenStackConfig
from vmha.controller.inbox import Inbox
from vmha.domain.commands import CloudHost, CloudInventory, CloudServer
from vmha.domain.errors import VmhaError
from vmha.domain.model import Capacity, InstanceState

log = logging.getLogger("vmha.serve")


def auth_of(cfg: OpenStackConfig) -> OpenStackAuth:
    app_cred = bool(cfg.application_credential_id)
    return OpenStackAuth(
        cloud=cfg.cloud, auth_url=cfg.auth_url, region_name=cfg.region_name,
        interface=cfg.interface, username=cfg.username,
        password="" if app_cred else cfg.secret(), project_name=cfg.project_name,
        project_id=cfg.project_id, user_domain_name=cfg.user_domain_name,
        project_domain_name=cfg.project_domain_name,
        application_credential_id=cfg.application_credential_id,
        application_credential_secret=cfg.app_secret() if app_cred else "",
        ca_bundle=str(cfg.ca_bundle or ""), verify=cfg.verify, timeout_s=cfg.timeout_s,
        secret_setting=_secret_setting(cfg))


def _secret_setting(cfg: OpenStackConfig) -> str:
    """The setting the login's secret comes from, for error messages."""
    if cfg.application_credential_id:
        return ("application_credential_secret_file" if cfg.application_credential_secret_file
                else "application_credential_secret")
    return "password_file" if cfg.password_file else "password"


def build_openstack(cfg: OpenStackConfig) -> OpenStackCloud:
    """The adapter, logged in; ConfigError (one line) when it cannot be."""
    auth = auth_of(cfg)
    if not cfg.verify:
        log.warning("openstack.verify = false: TLS certificates of the cloud are NOT checked")
    conn = connect(auth)
    newest = validate(conn, auth)
    log.info("openstack: logged in to %s as %s; Nova up to microversion %s",
             cfg.cloud or cfg.auth_url, cfg.username or cfg.application_credential_id or "?",
             newest or "?")
    return OpenStackCloud(Nova(conn), OpenStackOptions(retry_s=cfg.retry_s))


# -- inventory ---------------------------------------------------------------------

NOVA_STATES = {"ACTIVE": InstanceState.RUNNING, "SHUTOFF": InstanceState.STOPPED,
               "PAUSED": InstanceState.PAUSED, "SUSPENDED": InstanceState.PAUSED,
               "ERROR": InstanceState.ERROR}
ASK_TIMEOUT_S = 60.0  # the engine's answer to one inventory


def inventory_command(snap: Snapshot, cfg: OpenStackConfig) -> CloudInventory:
    """What Nova knows, as the engine's `CloudInventory` command: each host's
    segment from its first host aggregate (`segments = "aggregate"`) or
    `default_segment`; Nova's statuses as vmha's instance states."""
    by_aggregate = cfg.segments == "aggregate"
    hosts = tuple(
        CloudHost(nh.name, vmha_name(nh.aggregates[0], nh.name)
                  if by_aggregate and nh.aggregates else cfg.default_segment,
                  managed=by_aggregate and bool(nh.aggregates), held=nh.held)
        for nh in snap.hosts)
    servers = tuple(
        CloudServer(id=s.id, name=s.name, host=s.host, project=s.project,
                    state=NOVA_STATES.get(s.status, InstanceState.UNKNOWN),
                    busy=bool(s.task_state), resources=Capacity(s.vcpus, s.ram_mb, s.disk_gb),
                    layers=s.layers, group=s.group)
        for s in snap.servers)
    return CloudInventory(hosts, servers, cfg.evacuable_tags, snap.read_at)


class InventorySync:
    """Keeps vmha's hosts and instances in line with Nova: every
    `interval_s`, and at once when `poke()`d (a Nova notification arrived).

    It only reads: each round it reads Nova (`read_snapshot`) and sends
    what it found to the engine as one `CloudInventory` command through the
    controller's inbox; the engine applies it (vmha.engine.cloudsync:
    hosts per compute service, instances per placed server, policies from
    Nova's keys, `instance.policy_invalid`). A controller that does not
    lead (`leading()` false) skips its rounds: the leader's engine is the
    one writer.
    """

    def __init__(self, nova: Nova, inbox: Inbox, cfg: OpenStackConfig,
                 leading: Callable[[], bool] = lambda: True) -> None:
        self.nova, self.inbox, self.cfg, self.leading = nova, inbox, cfg, leading
        self._wake = asyncio.Event()
        self.synced = 0  # completed syncs (tests and status)

    def poke(self) -> None:
        self._wake.set()

    async def _listen(self) -> NovaListener | None:
        """Nova's notifications poke the sync (when `notifications_url` is set)."""
        url = self.cfg.notifications_url.get_secret_value()
        if not url:
            return None
        loop = asyncio.get_running_loop()

        def poke(event_type: str) -> None:
            loop.call_soon_threadsafe(self.poke)

        try:
            listener = NovaListener(url, self.cfg.notifications_topics, poke,
                                    self.cfg.notifications_exchange)
            await asyncio.to_thread(listener.start)
        except Exception as exc:  # the bus is optional: the periodic sync goes on
            log.warning("openstack inventory: no Nova notifications (%s: %s); syncing "
                        "every %g s only", type(exc).__name__, exc, self.cfg.inventory_interval_s)
            return None
        return listener

    async def run(self) -> None:
        listener = await self._listen()
        try:
            await self._loop()
        finally:
            if listener is not None:
                await asyncio.to_thread(listener.stop)

    async def sync_once(self) -> dict[str, int]:
        """Read Nova and have the engine apply it; what changed."""
        snap = await asyncio.to_thread(read_snapshot, self.nova, self.nova.image_props)
        answer: dict[str, int] = await asyncio.wait_for(
            self.inbox.ask(inventory_command(snap, self.cfg)), ASK_TIMEOUT_S)
        self.synced += 1
        return answer

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            if self.leading():
                try:
                    await self.sync_once()
                except (VmhaError, TimeoutError) as exc:
                    log.warning("openstack inventory: cannot sync with Nova: %s",
                                getattr(exc, "detail", None) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.inventory_interval_s)
            await asyncio.sleep(self.cfg.inventory_min_gap_s)
