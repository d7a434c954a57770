"""`vmha serve` refuses a bad start with one line, before any work: no
store opened or migrated, no engine started (issue 11, item 9)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from live_server import LiveServer, free_low_port

from vmha.adapters.fencing.secrets import generate_key

TOKENS = '[[api.tokens]]\ntoken = "t-admin"\nrole = "admin"\n'


def serve(tmp_path: Path, extra: str, api_port: int | None = None,
          hb_port: int | None = None) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "vmha.toml"
    config.write_text(
        f'[api]\nlisten = "127.0.0.1:{api_port or free_low_port()}"\n{TOKENS}'
        f'[store]\nurl = "sqlite:///{tmp_path / "db" / "vmha.db"}"\n'
        f'[heartbeat]\nlisten = "127.0.0.1:{hb_port or free_low_port()}"\n{extra}')
    return subprocess.run(
        [sys.executable, "-c", "from vmha.cli.main import main; main()", "serve", "-c",
         str(config)], capture_output=True, text=True, timeout=60, check=False)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(("extra", "words"), [
    ('[fencing]\nsecret_key_file = "/nonexistent/vmha.key"\n', "cannot read secret_key_file"),
    ("[fencing]\nsecret_key_file = \"{bad}\"\n", "not a Fernet key"),
    ('[[api.tokens]]\ntoken = "t-admin"\nrole = "project:p1"\n',
     "the same token as api.tokens[0] (roles 'admin' and 'project:p1')"),
])
def test_configuration_errors_are_one_line_and_exit_2(tmp_path: Path, extra: str,
                                                      words: str) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not-a-key\n")
    done = serve(tmp_path, extra.replace("{bad}", str(bad)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in one_line(done)
    assert not (tmp_path / "db" / "vmha.db").exists()  # no migration ran


@pytest.mark.parametrize("which", ["api", "heartbeat"])
def test_a_port_in_use_is_one_line_before_any_work(tmp_path: Path, which: str) -> None:
    kind = socket.SOCK_STREAM if which == "api" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        done = serve(tmp_path, f'[fencing]\nsecret_key_file = "{key_file(tmp_path)}"\n',
                     **{f"{'api' if which == 'api' else 'hb'}_port": port})
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_line(done)
    proto = "tcp" if which == "api" else "udp"
    assert f"cannot listen on 127.0.0.1:{port}/{proto}" in line
    assert "in use" in line
    assert not (tmp_path / "db" / "vmha.db").exists()


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.key"
    path.write_text(generate_key())
    return path


def test_a_key_is_generated_once_and_a_replaced_key_is_refused(tmp_path: Path) -> None:
    live = LiveServer(tmp_path)
    live.start()
    try:
        # A decision token in a (deprecated) URL never reaches the access log.
        answer = live.api("POST", "/v1/decisions/job-x.s3cret-in-the-path",
                          json={"action": "ignore"})
        assert answer.status_code == 404
    finally:
        live.stop()
    key = tmp_path / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600
    log = live.log.read_text()
    assert log.count("generated the secret key") == 1
    assert "s3cret-in-the-path" not in log and "/v1/decisions/***" in log
    live.start()  # the same key again: no new one, the store accepts it
    live.stop()
    assert live.log.read_text().count("generated the secret key") == 1
    key.write_text(generate_key())  # a controller with another key
    done = subprocess.run(
        [sys.executable, "-c", "from vmha.cli.main import main; main()", "serve", "-c",
         str(live.config)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "encrypted with another key" in one_line(done)
