"""Operators' `fence`, `fence-ack` (refused while the host answers), host
actions and stored BMC credentials, through the API of a real controller
service (engine running) against the real IPMI emulator."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fencekit import PASSWORD, RunningBmc, free_port
from test_operator_api import ADMIN, OPERATOR, VIEWER, as_, free_udp_port

from vmha.adapters.fencing.secrets import generate_key
from vmha.cli.server import build_controller
from vmha.config import Settings


def settings_for(tmp_path: Path, key_file: Path | None) -> Settings:
    fencing: dict[str, Any] = {"ipmi_timeout_s": 3.0}  # a busy 2-core box: not 1 s
    if key_file is not None:
        fencing["secret_key_file"] = str(key_file)
    return Settings.model_validate({
        "api": {"tokens": [{"token": ADMIN, "role": "admin", "name": "ann"},
                           {"token": OPERATOR, "role": "operator", "name": "otto"},
                           {"token": VIEWER, "role": "viewer"}]},
        "store": {"url": f"sqlite:///{tmp_path / 'vmha.db'}"},
        "heartbeat": {"listen": f"127.0.0.1:{free_udp_port()}"},
        "controller": {"fence_timeout_s": 6.0, "fence_poll_s": 0.2, "job_poll_s": 0.2,
                       "bmc_status_timeout_s": 2.0},
        "fencing": fencing,
    })


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_text(generate_key())
    return path


def bmc_body(bmc: RunningBmc, port: int | None = None) -> dict[str, Any]:
    return {"username": bmc.endpoint.username, "password": bmc.endpoint.password,
            "ipmi_address": "127.0.0.1", "ipmi_port": port or bmc.endpoint.port}


def wait_job(client: TestClient, job: str, states: set[str], timeout: float = 20.0
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got: dict[str, Any] = client.get(f"/v1/jobs/{job}", headers=as_(client, ADMIN)).json()
        if got["state"] in states or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def events(client: TestClient, etype: str) -> list[dict[str, Any]]:
    page = client.get("/v1/events", params={"type": etype, "limit": 100},
                      headers=as_(client, ADMIN)).json()
    return list(page["items"])


def setup_hosts(client: TestClient, levels: dict[str, list[list[str]]]) -> None:
    admin = as_(client, ADMIN)
    client.post("/v1/segments", json={"name": "s1"}, headers=admin).raise_for_status()
    for name, lv in levels.items():
        client.post("/v1/hosts", json={"name": name, "segment": "s1", "fence_levels": lv},
                    headers=admin).raise_for_status()


def test_operator_fence_uses_the_stored_bmc_and_records_every_attempt(
    tmp_path: Path, ipmi_bmc: RunningBmc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    controller = build_controller(settings_for(tmp_path, key_file(tmp_path)))
    seen: list[str] = []
    with TestClient(controller.app) as client:
        setup_hosts(client, {"h1": [["redfish"], ["ipmi"], ["manual"]]})
        op, admin = as_(client, OPERATOR), as_(client, ADMIN)
        assert client.put("/v1/hosts/h1/bmc", json=bmc_body(ipmi_bmc),
                          headers=op).status_code == 403
        put = client.put("/v1/hosts/h1/bmc", json=bmc_body(ipmi_bmc), headers=admin)
        assert put.status_code == 200, put.text
        assert put.json()["password"] == "***"
        shown = client.get("/v1/hosts/h1/bmc", headers=op)
        assert shown.json()["password"] == "***" and shown.json()["ipmi_port"] > 0
        assert client.get("/v1/hosts/h1/bmc", headers=as_(client, VIEWER)).status_code == 403

        fence = client.post("/v1/hosts/h1/fence", json={"method": None}, headers=op)
        assert fence.status_code == 202, fence.text
        body = fence.json()
        assert body["requested_by"] == "otto"
        assert body["levels"] == [["redfish"], ["ipmi"]]  # manual cannot power off
        job = wait_job(client, body["job"], {"done", "failed", "paused"})
        seen += [put.text, shown.text, fence.text, str(job)]
        steps = {s["name"]: s for s in job["steps"]}
        assert steps["fence:0:redfish:off"]["state"] == "failed"
        assert "redfish BMC of host" in steps["fence:0:redfish:off"]["detail"]
        assert steps["fence:1:ipmi:off"]["state"] == "done", steps["fence:1:ipmi:off"]["detail"]
        confirm = steps["fence:1:ipmi:confirm"]
        assert confirm["state"] == "done" and confirm["detail"] == "ipmi reports power off"
        assert confirm["duration_s"] is not None
        assert job["state"] == "done", job
        assert ipmi_bmc.state_file.read_text().strip() == "off"
        fenced = events(client, "host.fenced")
        assert [e["subject"] for e in fenced] == ["h1"]
        assert client.post("/v1/hosts/h1/fence", headers=op).status_code == 409
        assert client.post("/v1/hosts/h9/fence", headers=op).status_code == 404
        seen.append(str(events(client, "host.*")))
    controller.close()
    for text in [*seen, caplog.text]:
        assert PASSWORD not in text
    assert PASSWORD.encode() not in (tmp_path / "vmha.db").read_bytes()  # encrypted at rest


def test_all_levels_down_pauses_then_ack_is_refused_while_heartbeats_are_current(
    tmp_path: Path, ipmi_bmc: RunningBmc
) -> None:
    controller = build_controller(settings_for(tmp_path, key_file(tmp_path)))
    with TestClient(controller.app) as client:
        setup_hosts(client, {"h2": [["ipmi"]], "h3": [["manual"]]})
        op, admin = as_(client, OPERATOR), as_(client, ADMIN)
        # h2's BMC does not answer
        client.put("/v1/hosts/h2/bmc", json=bmc_body(ipmi_bmc, port=free_port()),
                   headers=admin).raise_for_status()
        no_power = client.post("/v1/hosts/h3/fence", headers=op)
        assert no_power.status_code == 409 and "no power fence level" in no_power.json()["detail"]

        job_id = client.post("/v1/hosts/h2/actions",
                             json={"action": "fence"}, headers=op).json()["job"]
        job = wait_job(client, job_id, {"paused", "failed", "done"})
        assert job["state"] == "paused", job
        assert [e["subject"] for e in events(client, "host.fence_failed")] == ["h2"]
        assert client.get("/v1/hosts/h2", headers=op).json()["state"] == "failed"

        controller.service.engine.heartbeat("h2", 1, time.time())  # it talks again
        refused = client.post("/v1/hosts/h2/fence-ack", json={}, headers=op)
        assert refused.status_code == 409, refused.text
        assert "heartbeats are current" in refused.json()["detail"]
        assert "--force" in refused.json()["detail"]

        forced = client.post("/v1/hosts/h2/actions", json={"action": "fence-ack", "force": True},
                             headers=op)
        assert forced.status_code == 202, forced.text
        assert forced.json()["forced"] is True
        acked = events(client, "host.fence_acked")
        assert acked[-1]["payload"]["forced"] is True
        assert acked[-1]["payload"]["by"] == "otto"
        assert "heartbeats are current" in acked[-1]["payload"]["overridden"]
        job = wait_job(client, job_id, {"done", "failed"})
        assert job["state"] == "done", job
        assert "operator otto acknowledged" in job["data"]["fence"]["confirmed_by"]
    controller.close()


def test_enable_disable_actions_and_roles(tmp_path: Path) -> None:
    controller = build_controller(settings_for(tmp_path, None))
    with TestClient(controller.app) as client:
        setup_hosts(client, {"h1": []})
        op = as_(client, OPERATOR)
        for action in ("disable", "enable"):
            done = client.post("/v1/hosts/h1/actions", json={"action": action, "reason": "rack"},
                               headers=op)
            assert done.status_code == 202, done.text
        kinds = [e["type"] for e in events(client, "host.*") if e["type"] in
                 ("host.enabled", "host.disabled")]
        assert kinds == ["host.disabled", "host.enabled"]
        viewer = as_(client, VIEWER)
        for action in ("fence", "fence-ack", "enable"):
            got = client.post("/v1/hosts/h1/actions", json={"action": action}, headers=viewer)
            assert got.status_code == 403, (action, got.text)
        bad = client.post("/v1/hosts/h1/actions", json={"action": "reboot"}, headers=op)
        assert bad.status_code == 422
        # no secret key configured: the controller generated one beside its
        # database, and BMC credentials are stored encrypted with it
        stored = client.put("/v1/hosts/h1/bmc", headers=as_(client, ADMIN), json={
            "username": "u", "password": "pw-xyz", "ipmi_address": "127.0.0.1"})
        assert stored.status_code == 200, stored.text
        assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    controller.close()
    assert b"pw-xyz" not in b"".join(p.read_bytes() for p in tmp_path.glob("vmha.db*"))


def test_fence_agent_level_runs_fence_ipmilan_through_the_controller(
    tmp_path: Path, ipmi_bmc: RunningBmc, caplog: pytest.LogCaptureFixture
) -> None:
    """[bmcs.h1] fence_agent = "fence_ipmilan": the engine's `fence_agent`
    level runs Debian's fence_ipmilan --lanplus against the IPMI emulator."""
    caplog.set_level(logging.DEBUG)
    pw = tmp_path / "h1.password"
    pw.write_text(PASSWORD)
    settings = settings_for(tmp_path, None).model_copy(update={"bmcs": Settings.model_validate({
        "bmcs": {"h1": {"username": ipmi_bmc.endpoint.username, "password_file": str(pw),
                        "ipmi_address": "127.0.0.1", "ipmi_port": ipmi_bmc.endpoint.port,
                        "fence_agent": "fence_ipmilan",
                        "fence_agent_options": {"lanplus": "1", "power_wait": "0"}}}}).bmcs})
    controller = build_controller(settings)
    with TestClient(controller.app) as client:
        setup_hosts(client, {"h1": [["fence_agent"], ["manual"]]})
        op = as_(client, OPERATOR)
        status = client.get("/v1/hosts/h1/power-status", headers=op).json()
        assert status["methods"]["fence_agent"] == "on"
        started = client.post("/v1/hosts/h1/fence", json={"method": "fence_agent"}, headers=op)
        assert started.status_code == 202, started.text
        job = wait_job(client, started.json()["job"], {"done", "failed", "paused"}, 30.0)
        steps = {s["name"]: s for s in job["steps"]}
        assert steps["fence:0:fence_agent:off"]["state"] == "done", job
        assert steps["fence:0:fence_agent:confirm"]["detail"] == "fence_agent reports power off"
        assert job["state"] == "done"
        assert ipmi_bmc.state_file.read_text().strip() == "off"
        text = str(job) + started.text + str(status)
    controller.close()
    assert PASSWORD not in text + caplog.text


def test_config_show_never_echoes_bmc_passwords_or_the_secret_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from vmha.cli.main import app

    key = generate_key()
    monkeypatch.setenv("VMHA_SECRET_KEY", key)
    config = tmp_path / "vmha.toml"
    config.write_text(
        '[bmcs.h1]\nusername = "admin"\npassword = "Bmc-Pw-in-config"\n'
        'ipmi_address = "10.0.0.1"\nfence_agent = "fence_ipmilan"\n'
        'fence_agent_options = {lanplus = "1"}\n'
        f'[fencing]\nsecret_key_file = "{tmp_path / "k"}"\n')
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(app, ["config", "show", "--config", str(config), *extra])
        assert result.exit_code == 0, result.output
        assert "Bmc-Pw-in-config" not in result.output and key not in result.output
        assert "fence_ipmilan" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[bmcs.h1]\nusername = "a"\npassword = "Bmc-Pw-in-config"\n'
                   'fence_agent_options = {passwd = "Bmc-Pw-in-config"}\n')
    result = CliRunner().invoke(app, ["config", "show", "--config", str(bad)])
    assert result.exit_code != 0
    assert "no secrets in options" in result.output
    assert "Bmc-Pw-in-config" not in result.output
