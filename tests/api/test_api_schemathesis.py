"""Property-based run over the OpenAPI schema: no input may cause a 5xx.

A short, bounded run (a dozen valid and a dozen invalid examples per
operation, admin token) on a seeded SQLite store, through schemathesis'
ASGI transport. One pytest case per operation, each on a fresh store.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from vmha.adapters.store.fake import FakeStore
from vmha.adapters.system import SequentialIds, SystemClock
from vmha.api import create_app
from vmha.config import Settings
from vmha.errors import Conflict

ADMIN = {"Authorization": "Bearer tok-admin"}


class IdleEngine:
    """Stands in for the running engine's operator calls (HostOperations)."""

    async def power_status(self, host: str) -> dict[str, str]:
        return {"ipmi": "on"}

    async def fence_ack(self, host: str, who: str) -> None:
        return None

    async def instance_action(self, instance_id: str, *_: Any) -> Any:
        raise Conflict(f"idle engine: no action on {instance_id}")

    async def decide(self, token: str, *_: Any) -> Any:
        raise Conflict("idle engine: no decision is pending")

    async def domain_events(self, host: str, events: Any) -> int:
        return 0

    async def domain_inventory(self, host: str, domains: Any) -> None:
        return None


def _operations() -> list[tuple[str, str]]:
    """Every (path, METHOD) of the schema (it does not depend on the store)."""
    spec = create_app(Settings(), FakeStore(), SystemClock(), SequentialIds()).openapi()
    return [(path, method.upper()) for path, item in spec["paths"].items() for method in item]


@pytest.mark.parametrize(("path", "method"), _operations(),
                         ids=[f"{m} {p}" for p, m in _operations()])
def test_no_server_errors(app: FastAPI, seeded: TestClient, path: str, method: str) -> None:
    app.state.vmha.operations = IdleEngine()  # power-status / fence-ack need an engine
    app.state.vmha.inbox = app.state.vmha.operations  # and the agents' reports
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    cases = (operation.as_strategy(GenerationMode.POSITIVE)
             | operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=20, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(headers=ADMIN, checks=[not_a_server_error])

    run()
