"""Fixtures for the fencing tests: real BMC emulators on 127.0.0.1, each a
subprocess started on a free port and stopped by its PID in the finalizer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fencekit import PASSWORD, USER, RunningBmc, free_port, stop, wait_for_line

from vmha.adapters.fencing.config import BmcEndpoint


@pytest.fixture
def ipmi_bmc(tmp_path: Path) -> Iterator[RunningBmc]:
    port = free_port()
    pw = tmp_path / "bmc-password"
    pw.write_text(PASSWORD + "\n")
    state = tmp_path / "power"
    log_file = tmp_path / "bmc_ipmi.log"
    cmd = [
        sys.executable,
        "-m",
        "vmha.lab.bmc_ipmi",
        "--port",
        str(port),
        "--user",
        USER,
        "--password-file",
        str(pw),
        "--state-file",
        str(state),
    ]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_line(proc, log_file, "listening on udp")
        yield RunningBmc(
            BmcEndpoint("127.0.0.1", USER, PASSWORD, port=port), state, log_file, proc.pid
        )
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def redfish_bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBmc]:
    """One HTTPS Redfish emulator per test module (startup imports Flask and
    sushy-tools: ~1 s); tests reset the power file they change."""
    tmp_path = tmp_path_factory.mktemp("redfish")
    port = free_port()
    pw = tmp_path / "bmc-password"
    pw.write_text(PASSWORD + "\n")
    state = tmp_path / "power"
    log_file = tmp_path / "bmc_redfish.log"
    cmd = [
        sys.executable,
        "-m",
        "vmha.lab.bmc_redfish",
        "--port",
        str(port),
        "--user",
        USER,
        "--system",
        "node3",
        "--password-file",
        str(pw),
        "--state-file",
        str(state),
        "--cert",
        str(tmp_path / "cert.pem"),
        "--key",
        str(tmp_path / "key.pem"),
    ]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_line(proc, log_file, "listening on https")
        endpoint = BmcEndpoint(
            f"https://127.0.0.1:{port}", USER, PASSWORD, system="/redfish/v1/Systems/node3"
        )
        yield RunningBmc(endpoint, state, log_file, proc.pid)
    finally:
        stop(proc)
