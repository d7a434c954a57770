"""The lab's IPMI BMC emulator at the protocol level, and its power backends."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from fencekit import PASSWORD, USER, RunningBmc, free_port, stop, wait_for_line

from vmha.adapters.fencing.config import BmcEndpoint, static_lookup
from vmha.adapters.fencing.ipmi import IpmiFencer
from vmha.domain.model import Host
from vmha.errors import TemporaryError
from vmha.lab.power import CommandPower, FilePower
from vmha.ports import PowerState

HOST = Host(name="node4", segment="seg")


def open_session(port: int, auth: int, integrity: int, conf: int) -> bytes:
    """Send one RMCP+ Open Session Request (IPMI 2.0 table 13-16), return the reply payload."""
    payload = bytes([7, 4, 0, 0]) + struct.pack("<I", 0xA0A1A2A3)
    for kind, algo in ((0, auth), (1, integrity), (2, conf)):
        payload += bytes([kind, 0, 0, 8, algo, 0, 0, 0])
    header = bytes([6, 0, 0xFF, 7, 6, 0x10]) + bytes(8) + struct.pack("<H", len(payload))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(header + payload, ("127.0.0.1", port))
        reply, _ = s.recvfrom(1024)
    assert reply[5] == 0x11  # payload type: RMCP+ Open Session Response
    return reply[16:]


def test_emulator_refuses_sha256_and_accepts_suite_3(ipmi_bmc: RunningBmc) -> None:
    port = ipmi_bmc.endpoint.port
    refused = open_session(port, auth=3, integrity=4, conf=1)  # cipher suite 17
    assert refused[0] == 7 and refused[1] == 0x11  # "no cipher suite match"
    assert refused[4:8] == struct.pack("<I", 0xA0A1A2A3)
    accepted = open_session(port, auth=1, integrity=1, conf=1)  # cipher suite 3
    assert accepted[1] == 0
    assert accepted[4:8] == struct.pack("<I", 0xA0A1A2A3)


def test_file_power(tmp_path: Path) -> None:
    power = FilePower(tmp_path / "p")
    assert power.power_state() is True
    power.power_off()
    assert (tmp_path / "p").read_text() == "off\n" and power.power_state() is False
    power.power_on()
    assert power.power_state() is True


def test_command_power(tmp_path: Path) -> None:
    flag = tmp_path / "running"
    flag.touch()
    power = CommandPower(["rm", str(flag)], ["touch", str(flag)], ["test", "-e", str(flag)])
    power.power_off()
    assert not flag.exists() and power.power_state() is False
    power.power_on()
    assert flag.exists() and power.power_state() is True
    with pytest.raises(subprocess.CalledProcessError):
        CommandPower(["false"], ["true"]).power_off()


def start_command_bmc(
    tmp_path: Path, off: str, on: str, status: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (tmp_path / "pw").write_text(PASSWORD)
    log_file = tmp_path / "bmc.log"
    cmd = [
        sys.executable,
        "-m",
        "vmha.lab.bmc_ipmi",
        "--port",
        str(port),
        "--user",
        USER,
        "--password-file",
        str(tmp_path / "pw"),
        "--off-cmd",
        off,
        "--on-cmd",
        on,
        "--status-cmd",
        status,
    ]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_for_line(proc, log_file, "listening on udp")
    return proc, port


def test_command_backend_through_ipmi(tmp_path: Path) -> None:
    """What the lab does: power off runs a command (kill the host), on another."""
    flag = tmp_path / "host running"  # a space: argv is split like a shell would
    flag.touch()
    q = f"'{flag}'"
    proc, port = start_command_bmc(tmp_path, f"rm {q}", f"touch {q}", f"test -e {q}")
    try:
        fencer = IpmiFencer(
            static_lookup({HOST.name: BmcEndpoint("127.0.0.1", USER, PASSWORD, port=port)})
        )

        async def scenario() -> list[PowerState]:
            await fencer.power_off(HOST)
            off = await fencer.power_status(HOST)
            await fencer.power_on(HOST)
            return [off, await fencer.power_status(HOST)]

        assert asyncio.run(scenario()) == [PowerState.OFF, PowerState.ON]
        assert flag.exists()
    finally:
        stop(proc)


def test_failing_power_command_is_a_temporary_error(tmp_path: Path) -> None:
    proc, port = start_command_bmc(tmp_path, "false", "true", "true")
    try:
        fencer = IpmiFencer(
            static_lookup({HOST.name: BmcEndpoint("127.0.0.1", USER, PASSWORD, port=port)})
        )
        with pytest.raises(TemporaryError, match="ipmi off on host node4"):
            asyncio.run(fencer.power_off(HOST))
        assert asyncio.run(fencer.power_status(HOST)) == PowerState.ON
    finally:
        stop(proc)
