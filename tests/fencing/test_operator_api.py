"""Operators' power-status and fence-ack through the API of a real
controller service (engine running), against the IPMI emulator."""

from __future__ import annotations

import socket
from pathlib import Path

from fastapi.testclient import TestClient
from fencekit import RunningBmc

from vmha.cli.server import build_controller
from vmha.config import Settings

ADMIN, OPERATOR, VIEWER = "tok-admin", "tok-operator", "tok-viewer"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(tmp_path: Path, bmc: RunningBmc) -> Settings:
    pw = tmp_path / "h1.password"
    pw.write_text(bmc.endpoint.password)
    return Settings.model_validate({
        "api": {"tokens": [{"token": ADMIN, "role": "admin", "name": "ann"},
                           {"token": OPERATOR, "role": "operator", "name": "otto"},
                           {"token": VIEWER, "role": "viewer"}]},
        "store": {"url": f"sqlite:///{tmp_path / 'vmha.db'}"},
        "heartbeat": {"listen": f"127.0.0.1:{free_udp_port()}"},
        "bmcs": {"h1": {"username": bmc.endpoint.username, "password_file": str(pw),
                        "ipmi_address": "127.0.0.1", "ipmi_port": bmc.endpoint.port}},
    })


def as_(client: TestClient, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_power_status_reads_the_bmc_and_fence_ack_needs_a_host_in_trouble(
    tmp_path: Path, ipmi_bmc: RunningBmc
) -> None:
    controller = build_controller(settings_for(tmp_path, ipmi_bmc))
    with TestClient(controller.app) as client:
        admin = as_(client, ADMIN)
        client.post("/v1/segments", json={"name": "s1"}, headers=admin).raise_for_status()
        client.post("/v1/hosts", json={"name": "h1", "segment": "s1"},
                    headers=admin).raise_for_status()

        ok = client.get("/v1/hosts/h1/power-status", headers=as_(client, OPERATOR))
        assert ok.status_code == 200, ok.text
        methods = ok.json()["methods"]
        assert methods["ipmi"] == "on"
        assert methods["redfish"].startswith("error:")  # h1 has no Redfish BMC

        ipmi_bmc.state_file.write_text("off\n")  # the host loses power
        off = client.get("/v1/hosts/h1/power-status", headers=admin).json()
        assert off["methods"]["ipmi"] == "off"

        up = client.post("/v1/hosts/h1/fence-ack", headers=as_(client, OPERATOR))
        assert up.status_code == 409
        assert "only a suspect, partitioned, failed or fencing host" in up.json()["detail"]
        assert client.post("/v1/hosts/h9/fence-ack", headers=admin).status_code == 404
        assert client.get("/v1/hosts/h1/power-status",
                          headers=as_(client, VIEWER)).status_code == 403
    controller.close()
