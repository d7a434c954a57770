"""The `fence_agent` fencer running Debian's `fence_ipmilan --lanplus`
against the pyghmi-based BMC emulator (the agent runs ipmitool)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import pytest
from fencekit import PASSWORD, USER, RunningBmc, free_port

from tiers import require_tier
from vmha.adapters.fencing.config import BmcEndpoint, static_lookup
from vmha.adapters.fencing.fence_agent import FenceAgentFencer, agent_options
from vmha.domain.model import Host
from vmha.errors import ConfigError, TemporaryError
from vmha.ports import PowerState


@pytest.fixture
def needs_ipmilan() -> None:
    missing = shutil.which("fence_ipmilan") is None or shutil.which("ipmitool") is None
    require_tier("fence-agents", "fence_ipmilan/ipmitool not installed: run "
                 "scripts/ensure-fence-deps.sh" if missing else None)

HOST = Host(name="node2", segment="seg", bmc="node2-bmc")


def ipmilan(endpoint: BmcEndpoint, timeout_s: float = 20.0) -> FenceAgentFencer:
    return FenceAgentFencer(
        "fence_ipmilan", static_lookup({HOST.name: endpoint}), {"lanplus": "1"}, timeout_s
    )


@pytest.mark.usefixtures("needs_ipmilan")
def test_status_off_status_on(ipmi_bmc: RunningBmc, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fencer = ipmilan(ipmi_bmc.endpoint)

    async def scenario() -> list[PowerState]:
        seen = [await fencer.power_status(HOST)]  # exit 0
        await fencer.power_off(HOST)
        assert ipmi_bmc.power_file() == "off"
        seen.append(await fencer.power_status(HOST))  # exit 2
        await fencer.power_on(HOST)
        seen.append(await fencer.power_status(HOST))
        return seen

    assert asyncio.run(scenario()) == [PowerState.ON, PowerState.OFF, PowerState.ON]
    assert ipmi_bmc.power_file() == "on"
    assert PASSWORD not in caplog.text


@pytest.mark.usefixtures("needs_ipmilan")
def test_wrong_password_fails_without_leaking(
    ipmi_bmc: RunningBmc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "Wr0ng-Guess-Pw"
    endpoint = BmcEndpoint("127.0.0.1", USER, bad, port=ipmi_bmc.endpoint.port)
    with pytest.raises(TemporaryError) as info:
        asyncio.run(ipmilan(endpoint).power_off(HOST))
    assert "fence_ipmilan off on host node2 failed (exit 1)" in str(info.value)
    assert bad not in str(info.value) and bad not in caplog.text
    assert ipmi_bmc.power_file() == "on"


@pytest.mark.usefixtures("needs_ipmilan")
def test_bmc_down_is_temporary_within_timeout() -> None:
    endpoint = BmcEndpoint("127.0.0.1", USER, PASSWORD, port=free_port())
    bound = 2.0
    started = time.monotonic()
    with pytest.raises(TemporaryError) as info:
        asyncio.run(ipmilan(endpoint, timeout_s=bound).power_status(HOST))
    assert time.monotonic() - started < bound + 1.0
    assert PASSWORD not in str(info.value)


def test_missing_agent_is_a_config_error() -> None:
    endpoint = BmcEndpoint("127.0.0.1", USER, PASSWORD, port=1623)
    fencer = FenceAgentFencer("fence_no_such_agent", static_lookup({HOST.name: endpoint}))
    with pytest.raises(ConfigError, match="fence_no_such_agent"):
        asyncio.run(fencer.power_status(HOST))


def test_agent_options_from_endpoints() -> None:
    ipmi = agent_options(BmcEndpoint("10.1.1.5", "u", "p", port=1623))
    assert ipmi == {"username": "u", "password": "p", "ip": "10.1.1.5", "ipport": "1623"}
    redfish = agent_options(
        BmcEndpoint("https://10.1.1.6:8443", "u", "p", system="/redfish/v1/Systems/n1")
    )
    assert redfish["ip"] == "10.1.1.6" and redfish["ipport"] == "8443"
    assert redfish["ssl"] == "1" and redfish["systems-uri"] == "/redfish/v1/Systems/n1"


def test_stdin_protocol_and_password_blanking(tmp_path: Path) -> None:
    """A stand-in agent that records its stdin and argv, answers status with
    exit 2, and echoes the password in an error (as a careless agent might)."""
    seen = tmp_path / "stdin"
    agent = tmp_path / "fence_standin"
    agent.write_text(
        "#!/bin/sh\n"
        f'cat > "{seen}"; echo "argv:$*" >> "{seen}"\n'
        f'if grep -q "^action=status$" "{seen}"; then exit 2; fi\n'
        f'echo "ERROR: login failed with password=$(sed -n "s/^password=//p" "{seen}")"\n'
        "exit 1\n"
    )
    agent.chmod(0o755)
    endpoint = BmcEndpoint("10.9.9.9", USER, PASSWORD, port=1623)
    fencer = FenceAgentFencer(str(agent), static_lookup({HOST.name: endpoint}), {"lanplus": "1"})

    assert asyncio.run(fencer.power_status(HOST)) == PowerState.OFF
    lines = seen.read_text().splitlines()
    assert set(lines[:-1]) == {
        "ip=10.9.9.9",
        "ipport=1623",
        f"username={USER}",
        f"password={PASSWORD}",
        "lanplus=1",
        "action=status",
    }
    assert lines[-1] == "argv:"  # nothing on the command line

    with pytest.raises(TemporaryError) as info:
        asyncio.run(fencer.power_off(HOST))
    assert "exit 1" in str(info.value) and "password=***" in str(info.value)
    assert PASSWORD not in str(info.value)
