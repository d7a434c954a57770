"""Server-side commands: `vmha serve`, `vmha db upgrade`, `vmha config show`.

They read the configuration (`--config`, `VMHA_CONFIG`, `./vmha.toml`);
a bad configuration stops them with one line and exit code 2 before
anything starts. `build_controller` assembles a controller (store with
migrations applied, API app) and is what the failure detector and the
recovery engine start with the app (vmha.cli.service).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from fastapi import FastAPI

from vmha.adapters.store import open_store, upgrade
from vmha.adapters.system import SystemClock, UuidGen
from vmha.api import create_app
from vmha.cli.client import CliError, cli_errors
from vmha.cli.output import print_json, print_record
from vmha.cli.service import Service
from vmha.config import Settings, hide_password, load_settings, masked
from vmha.errors import ConfigError, VmhaError
from vmha.ports import Clock, IdGen, Store

log = logging.getLogger("vmha.serve")

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Configuration file (default: $VMHA_CONFIG, else ./vmha.toml).",
    show_default=False)]

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)


def load(config: Path | None) -> Settings:
    """Settings, or a CliError with exit code 2 naming the bad key."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise CliError(exc.detail, code=2) from exc


@dataclass
class Controller:
    """The parts of a running controller."""

    settings: Settings
    store: Store
    app: FastAPI

    def close(self) -> None:
        closer = getattr(self.store, "close", None)
        if callable(closer):
            closer()


def build_controller(
    settings: Settings, clock: Clock | None = None, ids: IdGen | None = None
) -> Controller:
    """Open the store (applying migrations) and build the API app, whose
    lifespan starts the engine and the heartbeat receiver (see
    vmha.cli.service)."""
    url = settings.store.effective_url()
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create the directory of {url}: {exc.strerror}; "
                       "set store.url or store.data_dir") from exc
    try:
        store = open_store(url, migrate=True)
    except VmhaError as exc:
        raise CliError(f"cannot open the store at {hide_password(url)}: {exc.detail}") from exc
    clock, ids = clock or SystemClock(), ids or UuidGen()
    app = create_app(settings, store, clock, ids)
    # The service's lifespan runs the engine and the heartbeat receiver
    # whenever the app is served.
    Service(settings, store, clock, ids, app)
    return Controller(settings, store, app)


@cli_errors
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Override api.listen's host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Override api.listen's port.")] = None,
) -> None:
    """Run the controller: REST API, failure detector, recovery engine, heartbeats."""
    settings = load(config)
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per peer probe
    controller = build_controller(settings)
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    base = f"http://{bind_host}:{bind_port}"
    log.info("vmha controller: API %s/v1, docs %s/docs, store %s", base, base,
             hide_password(settings.store.effective_url()))
    try:
        uvicorn.run(controller.app, host=bind_host, port=bind_port,
                    log_level=settings.log.level)
    finally:
        controller.close()


@db_app.command("upgrade")
@cli_errors
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply every pending database migration."""
    settings = load(config)
    url = settings.store.effective_url()
    try:
        revision = upgrade(url)
    except VmhaError as exc:
        raise CliError(f"cannot upgrade the store at {hide_password(url)}: {exc.detail}") from exc
    typer.echo(f"database {hide_password(url)} is at revision {revision}")


@config_app.command("show")
@cli_errors
def config_show(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    settings = load(config)
    data: dict[str, Any] = masked(settings)
    data["store"]["effective_url"] = hide_password(settings.store.effective_url())
    if as_json:
        print_json(data)
    else:
        print_record(data)
