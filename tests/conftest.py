"""Shared pytest options. Tier-specific fixtures live in each tier's conftest."""

from __future__ import annotations

import os

import pytest

from vmha.errors import ConfigError
from vmha.lab import net


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/scenarios/*/expected.log from the current simulator output",
    )


@pytest.fixture(scope="session")
def lab_ready() -> None:
    """Tests that build a namespace lab: skipped where it cannot run (not
    root, tools missing), but a failure under CI as root, where it must."""
    try:
        net.check_prerequisites()
    except ConfigError as exc:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(f"lab tests cannot run under CI: {exc.detail}")
        pytest.skip(exc.detail)
