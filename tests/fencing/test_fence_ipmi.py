"""The `ipmi` fencer (pyghmi client) against the pyghmi-based BMC emulator."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from fencekit import PASSWORD, USER, RunningBmc, free_port

from vmha.adapters.fencing.config import BmcEndpoint, static_lookup
from vmha.adapters.fencing.ipmi import IpmiFencer
from vmha.domain.model import Host
from vmha.errors import TemporaryError, Unauthenticated
from vmha.ports import PowerState

HOST = Host(name="node1", segment="seg", bmc="node1-bmc")


def fencer_for(endpoint: BmcEndpoint, timeout_s: float = 5.0) -> IpmiFencer:
    return IpmiFencer(static_lookup({HOST.name: endpoint}), timeout_s=timeout_s)


def test_status_off_status_on(ipmi_bmc: RunningBmc, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fencer = fencer_for(ipmi_bmc.endpoint)
    assert fencer.method == "ipmi"

    async def scenario() -> list[PowerState]:
        seen = [await fencer.power_status(HOST)]
        await fencer.power_off(HOST)
        seen.append(await fencer.power_status(HOST))
        assert ipmi_bmc.power_file() == "off"  # the backend really is off
        await fencer.power_on(HOST)
        seen.append(await fencer.power_status(HOST))
        return seen

    assert asyncio.run(scenario()) == [PowerState.ON, PowerState.OFF, PowerState.ON]
    assert ipmi_bmc.power_file() == "on"
    assert PASSWORD not in caplog.text
    assert PASSWORD not in ipmi_bmc.log_file.read_text()


def test_power_cycle_ends_on(ipmi_bmc: RunningBmc) -> None:
    fencer = fencer_for(ipmi_bmc.endpoint)
    ipmi_bmc.state_file.write_text("off\n")

    async def scenario() -> PowerState:
        await fencer.power_cycle(HOST)
        return await fencer.power_status(HOST)

    assert asyncio.run(scenario()) == PowerState.ON


def test_wrong_password_is_unauthenticated(
    ipmi_bmc: RunningBmc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "Wr0ng-Guess-Pw"
    endpoint = BmcEndpoint("127.0.0.1", USER, bad, port=ipmi_bmc.endpoint.port)
    with pytest.raises(Unauthenticated) as info:
        asyncio.run(fencer_for(endpoint).power_off(HOST))
    message = str(info.value)
    assert "node1" in message and "password" in message
    assert bad not in message and PASSWORD not in message
    assert bad not in caplog.text and PASSWORD not in caplog.text
    assert ipmi_bmc.power_file() == "on"  # nothing was powered off
    # The refused login leaves no broken session behind in pyghmi's cache.
    assert asyncio.run(fencer_for(ipmi_bmc.endpoint).power_status(HOST)) == PowerState.ON


def test_unknown_user_is_unauthenticated(ipmi_bmc: RunningBmc) -> None:
    endpoint = BmcEndpoint("127.0.0.1", "intruder", PASSWORD, port=ipmi_bmc.endpoint.port)
    with pytest.raises(Unauthenticated) as info:
        asyncio.run(fencer_for(endpoint).power_status(HOST))
    assert "intruder" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_bmc_down_is_temporary_within_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = BmcEndpoint("127.0.0.1", USER, PASSWORD, port=free_port())  # nothing there
    bound = 1.5
    started = time.monotonic()
    with pytest.raises(TemporaryError) as info:
        asyncio.run(fencer_for(endpoint, timeout_s=bound).power_status(HOST))
    elapsed = time.monotonic() - started
    assert elapsed < bound + 1.0
    assert "did not answer" in str(info.value) and str(endpoint.port) in str(info.value)
    assert PASSWORD not in str(info.value) and PASSWORD not in caplog.text


def test_endpoint_repr_hides_password() -> None:
    endpoint = BmcEndpoint("10.0.0.9", USER, PASSWORD, port=623)
    assert PASSWORD not in repr(endpoint) and PASSWORD not in str(endpoint)
