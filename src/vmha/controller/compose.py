"""Assembling one controller process: the composition root's entry point.

`build_controller(settings)` reads the secret key, opens the store
(applying migrations, sealing its secrets with the key), builds the API app
with the dashboard, and the `Service` (vmha.controller.service) whose
lifespan runs the engine, the heartbeat intake and the webhook dispatcher
whenever the app is served. Called by `vmha serve` (vmha.cli.server, which
only turns the errors below into exit codes) and by tests.

Errors: ConfigError for what the configuration must fix (the cloud's login,
a bad secret key, another key than the database's: checked before any
migration), VmhaError for the rest (a directory that cannot be created, a
database that cannot be reached). The messages name what to change.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from vmha.adapters.fencing.secrets import KEY_ENV, KEY_FILE, load_box
from vmha.adapters.store import open_store, upgrade
from vmha.adapters.system import SystemClock, UuidGen
from vmha.api import create_app
from vmha.config import Settings, hide_password
from vmha.controller.openstack import build_openstack
from vmha.controller.service import Service
from vmha.domain.errors import ConfigError, VmhaError
from vmha.ports import Clock, IdGen, Store
from vmha.web import install as install_dashboard


@dataclass
class Controller:
    """The parts of a running controller."""

    settings: Settings
    store: Store
    app: FastAPI
    service: Service  # the engine, heartbeat receiver and dispatcher the app's lifespan runs

    def close(self) -> None:
        closer = getattr(self.store, "close", None)
        if callable(closer):
            closer()


def build_controller(
    settings: Settings, clock: Clock | None = None, ids: IdGen | None = None, *,
    heartbeat_socket: socket.socket | None = None,
) -> Controller:
    """The controller of `settings` (see the module docstring). A bad key
    stops here, before any migration."""
    # the cloud's login is checked before any migration too
    openstack = (build_openstack(settings.openstack)
                 if settings.cloud.adapter == "openstack" else None)
    url = settings.store.effective_url()
    folder = (Path(url.removeprefix("sqlite:///")).parent if url.startswith("sqlite:///")
              else settings.store.data_dir)  # the database's, and the generated key's
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VmhaError(f"cannot create the directory {str(folder)!r}: {exc.strerror}; "
                        "set store.url or store.data_dir") from exc
    box = load_box(settings.fencing.secret_key_file, os.environ.get(KEY_ENV),
                   generated=folder / KEY_FILE)
    try:
        store = open_store(url, migrate=True, box=box)
    except ConfigError as exc:  # another key than the database's
        raise ConfigError(f"cannot open the store at {hide_password(url)}: "
                          f"{exc.detail}") from exc
    except VmhaError as exc:
        raise VmhaError(f"cannot open the store at {hide_password(url)}: "
                        f"{exc.detail}") from exc
    clock, ids = clock or SystemClock(), ids or UuidGen()
    app = create_app(settings, store, clock, ids)
    service = Service(settings, store, clock, ids, app, bmc_box=box,
                      heartbeat_socket=heartbeat_socket, openstack=openstack)
    install_dashboard(app)
    return Controller(settings, store, app, service)


def upgrade_store(url: str) -> str:
    """Apply every migration missing on `url` (`vmha db upgrade`); the head
    revision. StoreUnavailable when the database cannot be reached."""
    return upgrade(url)
