"""`vmha whatif` against a real controller: tables, JSON, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from cli_tokens import ADMIN_TOKEN, VIEWER_TOKEN
from typer.testing import Result

Vmha = Callable[..., Result]


def _seed(server: Any) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    cap = {"vcpus": 4, "ram_mb": 4096, "disk_gb": 10}
    calls = [("/v1/segments", {"name": "w1"}),
             ("/v1/hosts", {"name": "wa", "segment": "w1", "capacity": cap}),
             ("/v1/hosts", {"name": "wb", "segment": "w1", "capacity": cap}),
             ("/v1/hosts", {"name": "wc", "segment": "w1", "capacity": cap}),
             ("/v1/instances", {"id": "big", "name": "big", "host": "wa",
                                "resources": {"vcpus": 1, "ram_mb": 3072}}),
             ("/v1/instances", {"id": "also", "name": "also", "host": "wb",
                                "resources": {"vcpus": 1, "ram_mb": 3072}})]
    for path, body in calls:
        r = httpx.post(server.url + path, json=body, headers=headers)
        assert r.status_code == 201, r.text


def test_whatif_one_host_then_two_then_the_n_plus_one_check(server: Any,
                                                           vmha: Vmha) -> None:
    _seed(server)
    one = vmha("whatif", "wa", token=VIEWER_TOKEN)
    assert one.exit_code == 0, one.output
    assert "big" in one.output and "move" in one.output and "wc" in one.output
    assert "wa: absorbed" in one.output

    two = vmha("whatif", "wa", "wb")
    assert two.exit_code == 3, two.output  # 2 of 3 at once: the guard pauses w1
    assert "failed at once" in two.output and "NOT absorbed" in two.output

    raw = vmha("whatif", "wa", "--json")
    assert json.loads(raw.output)["instances"][0]["target"] == "wc"

    # wc has room for one 3 GB instance only; wa's and wb's each fit; wc's
    # own failure moves nothing (it is empty): every single failure absorbed
    single = vmha("whatif", "--all-single")
    assert single.exit_code == 0, single.output
    assert "every single-host failure is absorbed" in single.output


def test_whatif_errors(vmha: Vmha) -> None:
    neither = vmha("whatif")
    assert neither.exit_code == 2 and "--all-single" in neither.output
    unknown = vmha("whatif", "nosuchhost")
    assert unknown.exit_code == 1 and "nosuchhost" in unknown.output
