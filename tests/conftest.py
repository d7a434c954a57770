"""Shared pytest options and the rules every tier follows.

- A tier that needs a service or root runs or fails (tests/tiers.py); the
  tiers opted out with VMHA_TEST_SKIP are listed at the end of the run.
- A run that selects lab tests (they use the `lab_ready` fixture) holds the
  machine-wide lab lock (vmha.lab.lock) from its first test to its end.
Tier-specific fixtures live in each tier's conftest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tiers import SKIP_ENV, opted_out, require_tier
from vmha.errors import ConfigError
from vmha.lab import net
from vmha.lab.lock import lab_lock


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/scenarios/*/expected.log from the current simulator output",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[Any]:
    """Hold the lab lock for the whole run when any selected test builds labs."""
    builds_labs = any("lab_ready" in getattr(i, "fixturenames", ()) for i in session.items)
    with lab_lock() if builds_labs and not session.config.option.collectonly \
            else contextlib.nullcontext():
        return (yield)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if opted_out:
        terminalreporter.section(f"tiers opted out with {SKIP_ENV}")
        for tier, why in sorted(opted_out.items()):
            terminalreporter.write_line(f"{tier}: {why}")


@pytest.fixture(scope="session")
def lab_ready() -> None:
    """Tests that build a namespace lab: they need root and the lab's tools."""
    try:
        net.check_prerequisites()
    except ConfigError as exc:
        require_tier("lab", exc.detail)


@pytest.fixture(scope="session")
def openstack_ready(lab_ready: None) -> None:
    """Tests on the lab cloud: its venv installed (scripts/ensure-openstack.sh),
    MariaDB and RabbitMQ answering."""
    from vmha.lab.openstack import install, provision

    missing = ""
    if not install.ready():
        missing = f"the OpenStack venv is not installed ({install.venv_dir()})"
    else:
        try:
            provision.mysql("SELECT 1;")
            provision.rabbitmqctl("list_vhosts")
        except (ConfigError, net.LabCommandFailed) as exc:
            missing = f"MariaDB or RabbitMQ does not answer: {exc.detail}"
    require_tier("openstack", missing)
