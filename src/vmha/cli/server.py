"""Server-side commands: `vmha serve`, `vmha db upgrade`, `vmha config show`.

They read the configuration (`--config`, `VMHA_CONFIG`, `./vmha.toml`);
a bad configuration stops them with one line and exit code 2 before
anything starts. The controller itself is assembled by
vmha.controller.compose (store with migrations applied, API app, and the
service whose lifespan runs the failure detector and the recovery engine);
this module parses the options, turns errors into exit codes and runs
uvicorn on the sockets bound by the start checks (vmha.cli.preflight).
"""

from __future__ import annotations

import enum
import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError as PydanticError

from vmha.adapters.logs import setup_logging
from vmha.cli import preflight
from vmha.cli.client import CliError, cli_errors
from vmha.cli.output import print_json, print_record
from vmha.config import CoordinationConfig, Settings, hide_password, load_settings, masked
from vmha.controller import compose
from vmha.controller.compose import Controller
from vmha.errors import ConfigError, VmhaError
from vmha.ports import Clock, IdGen

__all__ = ["Controller", "build_controller", "load"]

log = logging.getLogger("vmha.serve")

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Configuration file (default: $VMHA_CONFIG, else ./vmha.toml).",
    show_default=False)]


class LogFormatOpt(str, enum.Enum):
    text = "text"
    json = "json"


db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)


def load(config: Path | None) -> Settings:
    """Settings, or a CliError with exit code 2 naming the bad key."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise CliError(exc.detail, code=2) from exc


def build_controller(
    settings: Settings, clock: Clock | None = None, ids: IdGen | None = None, *,
    heartbeat_socket: socket.socket | None = None,
) -> Controller:
    """The controller of `settings` (vmha.controller.compose), its errors
    one line each: exit code 2 for the configuration (a bad key, another
    key than the database's, the cloud's login), 1 for the rest."""
    try:
        return compose.build_controller(settings, clock, ids,
                                        heartbeat_socket=heartbeat_socket)
    except ConfigError as exc:
        raise CliError(exc.detail, code=2) from exc
    except VmhaError as exc:
        raise CliError(exc.detail) from exc


def with_coordination(settings: Settings, url: str | None) -> Settings:
    """`settings` with `--coordination` applied (checked like the config key)."""
    if url is None:
        return settings
    try:
        section = CoordinationConfig(**{**settings.coordination.model_dump(), "url": url})
    except PydanticError as exc:
        raise CliError(f"--coordination: {exc.errors()[0]['msg']}", code=2) from exc
    return settings.model_copy(update={"coordination": section})


@cli_errors
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Override api.listen's host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Override api.listen's port.")] = None,
    log_format: Annotated[LogFormatOpt | None, typer.Option(
        "--log-format", help="text or json (one JSON object per line); "
        "default: log.format.")] = None,
    coordination: Annotated[str | None, typer.Option(
        "--coordination", help="Override coordination.url: local, or "
        "etcd://HOST:PORT[,HOST:PORT...] to run as one of several controllers.")] = None,
) -> None:
    """Run the controller: REST API, failure detector, recovery engine, heartbeats."""
    settings = with_coordination(load(config), coordination)
    fmt = log_format.value if log_format is not None else settings.log.format
    setup_logging(settings.log.level, fmt)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per peer probe
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin list at every start
    options = _uvicorn_options(settings, fmt)  # checks the TLS files
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    sockets = preflight.bind_all(settings, bind_host, bind_port)  # before any work
    try:
        controller = build_controller(settings, heartbeat_socket=sockets.heartbeat)
    except BaseException:
        sockets.close()
        raise
    base = f"{settings.api.scheme}://{bind_host}:{bind_port}"
    log.info("vmha controller: dashboard %s/, API %s/v1, docs %s/docs, store %s", base, base,
             base, hide_password(settings.store.effective_url()))
    _run(controller, sockets, uvicorn.Config(
        controller.app, host=bind_host, port=bind_port, log_level=settings.log.level,
        **options))


def _run(controller: Controller, sockets: preflight.Sockets, config: uvicorn.Config) -> None:
    """Serve on the bound sockets until a signal; then close everything."""
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sockets.api])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled (as uvicorn.run does, stop quietly)
    finally:
        controller.close()
        sockets.close()
    if not server.started:
        raise CliError("the controller did not start; the reason is in the log above")


def _uvicorn_options(settings: Settings, fmt: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if fmt == "json":
        options["log_config"] = None  # uvicorn's loggers go through ours
    api = settings.api
    if api.tls_cert_file is not None and api.tls_key_file is not None:
        for path in (api.tls_cert_file, api.tls_key_file):
            if not path.is_file():
                raise CliError(f"api.tls: {path} does not exist or is not a file", code=2)
        options.update(ssl_certfile=str(api.tls_cert_file), ssl_keyfile=str(api.tls_key_file))
    return options


@db_app.command("upgrade")
@cli_errors
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply every pending database migration."""
    settings = load(config)
    url = settings.store.effective_url()
    try:
        revision = compose.upgrade_store(url)
    except VmhaError as exc:
        raise CliError(f"cannot upgrade the store at {hide_password(url)}: {exc.detail}") from exc
    typer.echo(f"database {hide_password(url)} is at revision {revision}")


@config_app.command("secret-key")
def config_secret_key() -> None:
    """Print a new Fernet key for [fencing] secret_key_file (or VMHA_SECRET_KEY)."""
    from cryptography.fernet import Fernet  # only this command needs it here

    typer.echo(Fernet.generate_key().decode())


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
