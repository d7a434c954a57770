"""IPMI 2.0 passwords are at most 20 bytes: the lab's BMC emulators get
passwords that standard tools accept (ipmitool -I lanplus, which
fence_ipmilan runs), and config and API refuse longer IPMI passwords."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fencekit import USER, free_port, stop, wait_for_line

from tiers import require_tier
from vmha.adapters.store.fake import FakeStore
from vmha.adapters.system import SequentialIds, SystemClock
from vmha.api import create_app
from vmha.config import Settings, load_settings
from vmha.errors import ConfigError
from vmha.lab import bmcs

LONG = "x" * 21


def test_lab_bmc_passwords_work_with_ipmitool_lanplus(tmp_path: Path) -> None:
    require_tier("fence-agents", None if shutil.which("ipmitool") else
                 "ipmitool not installed: run scripts/ensure-fence-deps.sh")
    host_dir = tmp_path / "host1"
    host_dir.mkdir()
    (host_dir / "bmc.password").write_text("p" * 22 + "\n")  # left by an older lab
    record = bmcs.endpoints(tmp_path, {"dir": str(host_dir), "index": 1}, "host1")
    password = record["ipmi"]["password"]
    assert 16 <= len(password.encode()) <= 20
    assert Path(record["password_file"]).stat().st_mode & 0o777 == 0o600
    port, log_file = free_port(), tmp_path / "bmc.log"
    (tmp_path / "power").write_text("on\n")
    cmd = [sys.executable, "-m", bmcs.IPMI_MARK, "--port", str(port), "--address",
           "127.0.0.1", "--user", USER, "--password-file", record["password_file"],
           "--state-file", str(tmp_path / "power")]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_line(proc, log_file, "listening on udp")
        env_pw = {"IPMI_PASSWORD": password, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
        done = subprocess.run(
            ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", USER,
             "-E", "-C", "3", "power", "status"],
            capture_output=True, text=True, timeout=30, env=env_pw, check=False)
    finally:
        stop(proc)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Chassis Power is on" in done.stdout


def _bmc_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "vmha.toml"
    path.write_text(f'[bmcs.h1]\nusername = "admin"\npassword = "{LONG}"\n{extra}')
    return path


def test_config_refuses_an_ipmi_password_over_20_bytes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_bmc_config(tmp_path, 'ipmi_address = "127.0.0.1"\n'))
    assert "bmcs.h1.password = ***: is 21 bytes; IPMI 2.0 allows at most 20" in str(info.value)
    assert LONG not in str(info.value)
    with pytest.raises(ConfigError, match="at most 20"):
        load_settings(_bmc_config(tmp_path, 'redfish_url = "https://127.0.0.1:1"\n'
                                            'fence_agent = "fence_ipmilan"\n'))
    # Redfish alone has no such limit.
    load_settings(_bmc_config(tmp_path, 'redfish_url = "https://127.0.0.1:1"\n'))


def test_api_refuses_an_ipmi_password_over_20_bytes() -> None:
    settings = Settings.model_validate({"api": {"tokens": [{"token": "a", "role": "admin"}]}})
    app = create_app(settings, FakeStore(), SystemClock(), SequentialIds())
    with TestClient(app, headers={"Authorization": "Bearer a"}) as client:
        got = client.put("/v1/hosts/h1/bmc", json={
            "username": "u", "password": "é" * 11, "ipmi_address": "127.0.0.1"})
    assert got.status_code == 422, got.text
    assert got.json()["errors"][0]["field"] == "body.password"
    assert "22 bytes" in got.json()["detail"] and "é" not in got.json()["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({"ipmi_address": "x" * 70 + ".example"}, "body.ipmi_address"),  # a DNS label > 63
    ({"ipmi_address": "bmc_1!"}, "body.ipmi_address"),
    ({"redfish_url": "https://" + "y" * 64 + "/"}, "body.redfish_url"),
    ({"redfish_url": "https://bmc:99999/"}, "body.redfish_url"),
])
def test_api_refuses_bmc_addresses_no_client_can_resolve(body: dict[str, str],
                                                         field: str) -> None:
    # found by schemathesis: such an address made power-status answer 500
    settings = Settings.model_validate({"api": {"tokens": [{"token": "a", "role": "admin"}]}})
    app = create_app(settings, FakeStore(), SystemClock(), SequentialIds())
    with TestClient(app, headers={"Authorization": "Bearer a"}) as client:
        got = client.put("/v1/hosts/h1/bmc", json={"username": "u", "password": "p", **body})
    assert got.status_code == 422, got.text
    assert got.json()["errors"][0]["field"] == field
