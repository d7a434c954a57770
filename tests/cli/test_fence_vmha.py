"""`fence_vmha` driven as Pacemaker's fencer drives it: the console script,
options on stdin (or the command line), against a real `vmha serve`.

Powering real guests off and on is in tests/e2e/test_lab_app.py; here: the
interface (metadata, options, exit codes) and the project boundary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import ADMIN, LiveServer

P1, P2 = "fence-p1-token", "fence-p2-token"


def fence(stdin: str | None = None, *argv: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as the fencer runs it (stdin, no arguments)."""
    exe = shutil.which("fence_vmha", path=str(Path(sys.executable).parent))
    assert exe is not None, "fence_vmha is not installed (pip install -e .)"
    return subprocess.run([exe, *argv], input=stdin or "", capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fence"),
                        f'[[api.tokens]]\ntoken = "{P1}"\nrole = "project:p1"\n'
                        f'[[api.tokens]]\ntoken = "{P2}"\nrole = "project:p2"\n')
    server.start()
    try:
        for body in ({"name": "lab"},):
            server.api("POST", "/v1/segments", json=body).raise_for_status()
        server.api("POST", "/v1/hosts", json={"name": "h1", "segment": "lab"}).raise_for_status()
        for iid, name, project in (("i-1", "db1", "p1"), ("i-2", "db2", "p1"),
                                   ("i-9", "other", "p2")):
            server.api("POST", "/v1/instances", json={
                "id": iid, "name": name, "host": "h1", "project": project}).raise_for_status()
        yield server
    finally:
        server.stop()


def stdin_for(serve: LiveServer, **options: str) -> str:
    base = {"ip": "127.0.0.1", "ipport": str(serve.port), "password": P1}
    return "".join(f"{k}={v}\n" for k, v in {**base, **options}.items())


def test_metadata_is_valid_xml_with_the_standard_parameters_and_actions() -> None:
    done = fence(None, "-o", "metadata")
    assert done.returncode == 0, done.stderr
    root = ET.fromstring(done.stdout)  # noqa: S314 - our own agent's output
    assert root.tag == "resource-agent" and root.get("name") == "fence_vmha"
    params = {p.get("name"): p for p in root.iter("parameter")}
    for name in ("action", "ip", "ipport", "ssl", "ssl_insecure", "password",
                 "password_script", "plug", "port", "power_timeout"):
        assert name in params, name
        assert params[name].find("getopt") is not None
        assert params[name].find("content") is not None
    assert params["ip"].get("required") == "1"
    assert params["ssl"].find("content").get("type") == "boolean"  # type: ignore[union-attr]
    actions = {a.get("name") for a in root.iter("action")}
    assert {"on", "off", "reboot", "status", "list", "monitor", "metadata",
            "validate-all"} <= actions
    assert fence("action=metadata\n").stdout == done.stdout  # on stdin too


def test_usage_validate_all_and_bad_options() -> None:
    helped = fence(None, "-h")
    assert helped.returncode == 0 and "--plug" in helped.stdout
    ok = fence("action=validate-all\nip=127.0.0.1\npassword=x\n")
    assert ok.returncode == 0, ok.stderr
    for stdin, words in (("action=validate-all\npassword=x\n", "ip:"),
                         ("action=validate-all\nip=h\n", "password:"),
                         ("action=off\nip=h\npassword=x\n", "plug:"),
                         ("action=explode\nip=h\npassword=x\n", "action:"),
                         ("action=status\nip=h\nipport=0\npassword=x\nplug=a\n", "ipport:"),
                         ("garbage\n", "not key=value")):
        bad = fence(stdin)
        assert bad.returncode == 1 and words in bad.stderr, (stdin, bad.stderr)
    assert fence(None, "--no-such-option").returncode == 1


def test_status_list_and_monitor_see_only_the_token_project(serve: LiveServer) -> None:
    listed = fence(stdin_for(serve, action="list"))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["i-1,db1", "i-2,db2"]
    with_status = fence(stdin_for(serve, action="list-status", separator=";"))
    assert with_status.stdout.splitlines() == ["i-1;db1;ON", "i-2;db2;ON"]
    assert fence(stdin_for(serve, action="monitor")).returncode == 0
    on = fence(stdin_for(serve, action="status", port="i-1", nodename="db1",
                         unknown_key="ignored"))
    assert (on.returncode, on.stdout.strip()) == (0, "Status: ON")
    assert "ignoring unknown option 'unknown_key'" in on.stderr
    by_name = fence(None, "-o", "status", "-a", "127.0.0.1", "-u", str(serve.port),
                    "-p", P1, "-n", "db2")
    assert by_name.returncode == 0 and "Status: ON" in by_name.stdout
    foreign = fence(stdin_for(serve, action="status", plug="i-9"))
    assert foreign.returncode == 1 and "no instance with this id or name" in foreign.stderr
    refused = fence(stdin_for(serve, action="monitor", password="wrong"))
    assert refused.returncode == 1 and "refused the token (401)" in refused.stderr
    unreachable = fence(stdin_for(serve, action="monitor", ipport="1"))
    assert unreachable.returncode == 1 and "cannot reach the vmha API" in unreachable.stderr


def test_off_that_cannot_be_confirmed_fails_after_power_timeout(serve: LiveServer) -> None:
    # No cloud adapter here: the stop cannot happen, so it is never confirmed.
    done = fence(stdin_for(serve, action="off", plug="i-2", power_timeout="2"))
    assert done.returncode == 1
    assert "timed out after 2 s waiting for i-2 to be OFF" in done.stderr
    assert serve.api("GET", "/v1/instances/i-2", ADMIN).json()["state"] != "stopped"
    script = fence(stdin_for(serve, action="status", plug="i-1", password="",
                             password_script=f"echo {P1}"))
    assert script.returncode == 0, script.stderr
