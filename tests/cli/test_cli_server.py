"""`vmha serve`, `vmha db upgrade`, `vmha config show`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from typer.testing import Result

Vmha = Callable[..., Result]
SECRET = "very-s3cret-token-value"


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "vmha.toml"
    path.write_text(body)
    return path


def _good_config(tmp_path: Path, port: int = 8790) -> Path:
    return _config(tmp_path, (
        f'[api]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[[api.tokens]]\ntoken = "{SECRET}"\nrole = "admin"\n\n'
        f'[store]\nurl = "sqlite:///{tmp_path / "db" / "vmha.db"}"\n'
    ))


def test_config_show_masks_tokens(vmha_offline: Vmha, tmp_path: Path) -> None:
    config = _good_config(tmp_path)
    env = {"VMHA_STORE__URL": "postgresql+psycopg://vmha:pw-hidden@db/vmha"}
    human = vmha_offline("config", "show", "--config", str(config), env=env)
    assert human.exit_code == 0, human.stderr
    assert SECRET not in human.output and "pw-hidden" not in human.output
    assert "***" in human.output and "api.listen" in human.output

    raw = vmha_offline("config", "show", "--config", str(config), "--json", env=env)
    data = json.loads(raw.stdout)
    assert data["api"]["tokens"][0]["token"] == "***"
    assert data["store"]["url"] == "postgresql+psycopg://vmha:***@db/vmha"
    assert SECRET not in raw.output


def test_bad_config_exits_2_naming_the_key(vmha_offline: Vmha, tmp_path: Path) -> None:
    config = _config(tmp_path, '[api]\nlisten = "nowhere"\n')
    for command in (["config", "show"], ["serve"], ["db", "upgrade"]):
        result = vmha_offline(*command, "--config", str(config))
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: invalid configuration:")
        assert "api.listen = 'nowhere'" in result.stderr
    unknown = _config(tmp_path, "[api]\nlisten_on = 1\n")
    result = vmha_offline("config", "show", "--config", str(unknown))
    assert result.exit_code == 2
    assert "api.listen_on" in result.stderr and "unknown key" in result.stderr
    missing = vmha_offline("serve", "--config", str(tmp_path / "absent.toml"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_db_upgrade(vmha_offline: Vmha, tmp_path: Path) -> None:
    config = _good_config(tmp_path)
    (tmp_path / "db").mkdir()
    result = vmha_offline("db", "upgrade", "--config", str(config))
    assert result.exit_code == 0, result.stderr
    db = tmp_path / "db" / "vmha.db"
    assert result.stdout.startswith(f"database sqlite:///{db} is at revision")
    assert (tmp_path / "db" / "vmha.db").is_file()


def test_serve_runs_the_api(tmp_path: Path) -> None:
    """The console script, as an operator starts it; stopped by its PID."""
    with socket.socket() as sock, socket.socket(type=socket.SOCK_DGRAM) as udp:
        sock.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        port, hb_port = sock.getsockname()[1], udp.getsockname()[1]
    config = _good_config(tmp_path, port)
    # a free heartbeat port too: the default 0.0.0.0:8791 may be taken on a shared machine
    config.write_text(config.read_text() + f'\n[heartbeat]\nlisten = "127.0.0.1:{hb_port}"\n')
    vmha = shutil.which("vmha") or str(Path(sys.executable).with_name("vmha"))
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([vmha, "serve", "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "vmha serve not ready within 60 s"
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        hosts = httpx.get(f"{url}/v1/hosts", headers={"Authorization": f"Bearer {SECRET}"})
        assert hosts.json() == {"items": [], "next_marker": None}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    text = (tmp_path / "serve.log").read_text()
    assert f"vmha controller: dashboard {url}/, API {url}/v1, docs {url}/docs" in text
    assert SECRET not in text
