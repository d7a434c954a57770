"""`vmha status` against a real controller: one screen, JSON, exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from cli_tokens import ADMIN_TOKEN, VIEWER_TOKEN
from typer.testing import Result

from vmha.domain.model import Event, Job, JobKind, Severity, SubjectKind

Vmha = Callable[..., Result]


def settled(server: Any) -> None:
    """Until the controller is ready: on a loaded machine a stall of a few
    seconds makes it say it is overloaded for a while (rightly), which
    `vmha status` reports; these checks are about the rest of the screen."""
    deadline = time.monotonic() + 60
    while httpx.get(server.url + "/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the controller never became ready"
        time.sleep(0.2)


def test_status_shows_segments_hosts_jobs_and_decisions(server: Any, vmha: Vmha) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path, body in [("/v1/segments", {"name": "st1"}), ("/v1/segments", {"name": "st2"}),
                       ("/v1/hosts", {"name": "sa", "segment": "st1"}),
                       ("/v1/hosts", {"name": "sb", "segment": "st1"}),
                       ("/v1/hosts", {"name": "sc", "segment": "st2"})]:
        assert httpx.post(server.url + path, json=body, headers=headers).status_code == 201
    httpx.post(server.url + "/v1/hosts/sb/maintenance", headers=headers,
               json={"enabled": True, "reason": "new disks"})
    settled(server)
    healthy = vmha("status", token=VIEWER_TOKEN)
    assert healthy.exit_code == 0, healthy.output
    assert "ready" in healthy.output and "segment st1: 1 maintenance, 1 up" in healthy.output
    assert "new disks" in healthy.output
    assert "jobs running: 0, decisions pending: 0" in healthy.output

    store = server.controller.store
    store.create_job(Job(id="j1", kind=JobKind.HOST_RECOVERY, subject="sc", created_at=1.0,
                         updated_at=1.0, reason="recovering 0 instances of failed host sc"))
    store.create_job(Job(id="d1", kind=JobKind.DECISION, subject="vm9", created_at=1.0,
                         updated_at=1.0, reason="guest layer custom: waiting"))
    store.append_events([Event(type="segment.recovery_paused", subject="st2", time=2.0,
                               subject_kind=SubjectKind.SEGMENT, severity=Severity.CRITICAL,
                               payload={"segment": "st2", "reason": "2 of 2 failed at once"})])
    settled(server)
    attention = vmha("status")
    assert attention.exit_code == 3, attention.output
    assert "RECOVERY PAUSED: 2 of 2 failed at once" in attention.output
    assert "jobs running: 1, decisions pending: 1" in attention.output
    assert "decision d1 on vm9" in attention.output

    settled(server)
    data = json.loads(vmha("status", "--json").output)
    assert data["controller"]["ready"] == "ready"
    assert [j["id"] for j in data["jobs_running"]] == ["j1"]
    assert {s["name"]: s["paused"] for s in data["segments"]}["st2"] is True


def test_status_without_a_controller(vmha_offline: Vmha) -> None:
    out = vmha_offline("status", "--url", "http://127.0.0.1:9")
    assert out.exit_code == 1 and "cannot reach the vmha API" in out.output
