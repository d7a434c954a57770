"""The systemd units in etc/systemd pass `systemd-analyze verify`.

verify exits 0 even for unknown keys or bad values (it only warns), so any
line it prints about our unit fails the test. ExecStart names /opt/vmha,
where docs/install.md puts the venv; here it points at this venv's `vmha`
(verify checks that the binary exists).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiers import require_tier

UNITS = Path(__file__).parents[2] / "etc" / "systemd"


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def analyze() -> None:
    missing = None if shutil.which("systemd-analyze") else \
        "systemd-analyze is not installed (Debian package systemd)"
    require_tier("systemd", missing)


@pytest.mark.parametrize("name", ["vmha.service", "vmha-agent.service"])
def test_unit_verifies_cleanly(name: str, tmp_path: Path, analyze: None) -> None:
    vmha = Path(sys.executable).parent / "vmha"
    text = (UNITS / name).read_text()
    assert "/opt/vmha/bin/vmha " in text
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/vmha/bin/vmha", str(vmha)))
    done = _verify(unit)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if name in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_verify_catches_a_bad_unit(tmp_path: Path, analyze: None) -> None:
    """The check above can fail: a wrong value and an unknown key are reported."""
    unit = tmp_path / "bad.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nWatchdogSec=soon\nNoSuchKey=1\n")
    done = _verify(unit)
    assert "bad.service" in done.stderr and "NoSuchKey" in done.stderr


def test_units_use_notify_and_the_watchdog() -> None:
    serve = (UNITS / "vmha.service").read_text()
    agent = (UNITS / "vmha-agent.service").read_text()
    for text in (serve, agent):
        assert "Type=notify" in text and "WatchdogSec=" in text and "--log-format json" in text
    assert "DeviceAllow=/dev/watchdog rw" in agent and "User=vmha" in serve
