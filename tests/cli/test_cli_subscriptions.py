"""`vmha subscription ...` against a real controller (tests/cli/conftest.py).

The controller refuses private destinations (the default), so the
subscription made here points at a public address literal with an event
type that never occurs: nothing is ever sent to it."""

from __future__ import annotations

import json
from collections.abc import Callable

from typer.testing import Result

Vmha = Callable[..., Result]
HOOK = "https://93.184.216.34/hook"


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_create_list_show_deliveries_delete(vmha: Vmha) -> None:
    created = vmha("subscription", "create", HOOK, "--type", "test.never", "--json")
    sub = json.loads(_ok(created))
    assert sub["secret"] == "***" and sub["event_types"] == ["test.never"]
    assert "secret: " in created.stderr and "shown once" in created.stderr
    listing = _ok(vmha("subscription", "list"))
    assert sub["id"] in listing and HOOK in listing
    assert "***" in _ok(vmha("subscription", "show", sub["id"]))
    deliveries = _ok(vmha("subscription", "deliveries", sub["id"]))
    assert f"cursor at event {sub['cursor']}" in deliveries
    refused = vmha("subscription", "redeliver", sub["id"], "1")
    assert refused.exit_code == 1 and "404" in refused.stderr
    _ok(vmha("subscription", "delete", sub["id"]))
    assert vmha("subscription", "show", sub["id"]).exit_code == 1


def test_private_destination_is_a_one_line_error(vmha: Vmha) -> None:
    result = vmha("subscription", "create", "http://127.0.0.1:9/x", "--type", "host.*")
    assert result.exit_code == 1
    assert "422" in result.stderr and "loopback" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

