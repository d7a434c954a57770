"""The `redfish` fencer (sushy) and `fence_redfish` against the sushy-tools
emulator over HTTPS with a self-signed certificate and basic auth."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fencekit import PASSWORD, USER, RunningBmc, free_port

from tiers import require_tier
from vmha.adapters.fencing.config import BmcEndpoint, static_lookup
from vmha.adapters.fencing.fence_agent import FenceAgentFencer
from vmha.adapters.fencing.redfish import RedfishFencer
from vmha.domain.model import Host
from vmha.errors import TemporaryError, Unauthenticated
from vmha.ports import PowerState

HOST = Host(name="node3", segment="seg", bmc="node3-bmc")
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def ca_of(bmc: RunningBmc) -> str:
    return str(bmc.state_file.parent / "cert.pem")


def fencer_for(endpoint: BmcEndpoint, ca: str | None, timeout_s: float = 5.0) -> RedfishFencer:
    return RedfishFencer(static_lookup({HOST.name: endpoint}), timeout_s, ca_bundle=ca)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def on_off_on(fencer: RedfishFencer | FenceAgentFencer, bmc: RunningBmc) -> list[PowerState]:
    seen = [await fencer.power_status(HOST)]
    await fencer.power_off(HOST)
    assert bmc.power_file() == "off"
    seen.append(await fencer.power_status(HOST))
    await fencer.power_on(HOST)
    seen.append(await fencer.power_status(HOST))
    return seen


def test_status_off_status_on_verified_tls(
    redfish_bmc: RunningBmc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fencer = fencer_for(redfish_bmc.endpoint, ca_of(redfish_bmc))
    assert fencer.method == "redfish"
    states = asyncio.run(on_off_on(fencer, redfish_bmc))
    assert states == [PowerState.ON, PowerState.OFF, PowerState.ON]
    assert_no_secret(caplog.text, redfish_bmc.log_file.read_text())


def test_unknown_certificate_is_refused_by_default(redfish_bmc: RunningBmc) -> None:
    with pytest.raises(TemporaryError, match="redfish off on host node3"):
        asyncio.run(fencer_for(redfish_bmc.endpoint, ca=None).power_off(HOST))
    assert redfish_bmc.power_file() == "on"


def test_verify_off_works_and_warns(
    redfish_bmc: RunningBmc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    lookup = static_lookup({HOST.name: redfish_bmc.endpoint})
    fencer = RedfishFencer(lookup, verify=False)
    assert "verification is OFF" in caplog.text
    assert asyncio.run(fencer.power_status(HOST)) == PowerState.ON


def test_wrong_password_is_unauthenticated(
    redfish_bmc: RunningBmc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "Wr0ng-Guess-Pw"
    endpoint = replace(redfish_bmc.endpoint, password=bad)
    with pytest.raises(Unauthenticated) as info:
        asyncio.run(fencer_for(endpoint, ca_of(redfish_bmc)).power_off(HOST))
    assert "node3" in str(info.value) and "password" in str(info.value)
    assert_no_secret(str(info.value), caplog.text)
    assert bad not in str(info.value) and bad not in caplog.text
    assert redfish_bmc.power_file() == "on"


def test_bmc_down_is_temporary_within_timeout(tmp_path: Path) -> None:
    endpoint = BmcEndpoint(f"https://127.0.0.1:{free_port()}", USER, PASSWORD)
    bound = 1.5
    started = time.monotonic()
    with pytest.raises(TemporaryError) as info:
        asyncio.run(fencer_for(endpoint, None, timeout_s=bound).power_status(HOST))
    assert time.monotonic() - started < bound + 1.0
    assert_no_secret(str(info.value))


def test_fence_redfish_agent(redfish_bmc: RunningBmc, caplog: pytest.LogCaptureFixture) -> None:
    require_tier("fence-agents", "fence-agents not installed: run scripts/ensure-fence-deps.sh"
                 if shutil.which("fence_redfish") is None else None)
    caplog.set_level(logging.DEBUG)
    fencer = FenceAgentFencer(
        "fence_redfish",
        static_lookup({HOST.name: redfish_bmc.endpoint}),
        {"ssl-insecure": "1"},
        timeout_s=20,
    )
    states = asyncio.run(on_off_on(fencer, redfish_bmc))
    assert states == [PowerState.ON, PowerState.OFF, PowerState.ON]
    assert_no_secret(caplog.text)
