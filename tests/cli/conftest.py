"""CLI test fixtures: a real controller (uvicorn in a thread, SQLite file
store) built by `vmha.cli.server.build_controller` from a config file, and
a `vmha` runner (typer's CliRunner) that points at it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cli_tokens import ADMIN_TOKEN, VIEWER_TOKEN
from typer.testing import CliRunner, Result

from vmha.cli.main import app
from vmha.cli.server import Controller, build_controller, load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, port: int) -> Path:
    path = directory / "vmha.toml"
    path.write_text(
        f'[api]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[[api.tokens]]\ntoken = "{ADMIN_TOKEN}"\nrole = "admin"\nname = "ops"\n\n'
        f'[[api.tokens]]\ntoken = "{VIEWER_TOKEN}"\nrole = "viewer"\n\n'
        f'[store]\nurl = "sqlite:///{directory / "vmha.db"}"\n\n'
        f'[heartbeat]\nlisten = "127.0.0.1:{free_udp_port()}"\n'
    )
    return path


@dataclass
class Server:
    url: str
    config: Path
    controller: Controller


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("controller")
    port = free_port()
    config = write_config(directory, port)
    controller = build_controller(load(config))
    uv = uvicorn.Server(uvicorn.Config(controller.app, host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.02)
    assert httpx.get(f"{url}/readyz").status_code == 200
    yield Server(url, config, controller)
    uv.should_exit = True
    thread.join(timeout=10)
    controller.close()


Vmha = Callable[..., Result]


@pytest.fixture
def vmha(server: Server) -> Vmha:
    """Run `vmha ARGS...` against the test server (admin token by default)."""

    def run(*args: str, token: str | None = ADMIN_TOKEN) -> Result:
        env = {"VMHA_URL": server.url, "VMHA_TOKEN": token or "", "COLUMNS": "200"}
        return CliRunner().invoke(app, list(args), env=env)

    return run


@pytest.fixture
def vmha_offline() -> Vmha:
    """Run `vmha ARGS...` with no server around."""

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})

    return run
