"""Prints the property tests' seed (see seeding.py) at the end of the run."""

from __future__ import annotations

from typing import Any

from seeding import ENV, SEED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"property tests: seed {SEED} (repeat with {ENV}={SEED})")
