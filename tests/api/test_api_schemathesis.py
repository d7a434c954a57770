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

ADMIN = {"Authorization": "Bearer tok-admin"}


def idle_status() -> dict[str, Any]:
    return {"hosts_watched": 0, "overloaded": False, "overload_reason": "", "intake_lag_s": 0.0,
            "tick_lag_s": 0.0, "heartbeats_applied": 0, "heartbeats": {"accepted": 0}}


def one_controller() -> dict[str, Any]:
    return {"self": "c1", "coordination": "local", "healthy": True, "error": "",
            "leader": "c1", "epoch": 1, "lease_s": 5.0, "round_age_s": 0.5,
            "members": [{"name": "c1", "api_url": "http://127.0.0.1:7070",
                         "heartbeat": "127.0.0.1:8791", "leader": True, "owned_hosts": 3,
                         "silent_hosts": None}], "silent": []}


def _operations() -> list[tuple[str, str]]:
    """Every (path, METHOD) of the schema (it does not depend on the store)."""
    spec = create_app(Settings(), FakeStore(), SystemClock(), SequentialIds()).openapi()
    return [(path, method.upper()) for path, item in spec["paths"].items() for method in item]


@pytest.mark.parametrize(("path", "method"), _operations(),
                         ids=[f"{m} {p}" for p, m in _operations()])
def test_no_server_errors(app: FastAPI, seeded: TestClient, path: str, method: str) -> None:
    # `app` runs a real engine (fake cloud, no fencers) behind its inbox
    app.state.vmha.controller_status = idle_status  # GET /v1/controller
    app.state.vmha.controllers = one_controller  # GET /v1/controllers
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    cases = (operation.as_strategy(GenerationMode.POSITIVE)
             | operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=20, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(headers=ADMIN, checks=[not_a_server_error])

    run()
