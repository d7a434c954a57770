"""`vmha segment|host|instance|policy|event|job` against a real server."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import Result

from vmha.domain.jobs import ActionData
from vmha.domain.model import Job, JobKind, JobState
from vmha.domain.transitions import finish_step, start_step

Vmha = Callable[..., Result]
VIEWER = "cli-viewer-s3cret"  # matches tests/cli/conftest.py


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_host_create_list_and_json(vmha: Vmha) -> None:
    _ok(vmha("segment", "create", "rack1", "--description", "first rack"))
    out = _ok(vmha("host", "create", "cn1", "--segment", "rack1", "--address", "198.18.0.7",
                   "--vcpus", "16", "--ram-mb", "65536", "--disk-gb", "500", "--reserved",
                   "--fence-level", "redfish", "--fence-level", "ipmi,agent_watchdog"))
    assert "capacity.vcpus" in out and "16" in out

    table = _ok(vmha("host", "list", "--segment", "rack1"))
    header, row = table.strip().splitlines()[:2]
    assert header.split() == [
        "NAME", "SEGMENT", "STATE", "ADDRESS", "HEARTBEAT", "PHI", "MAINTENANCE", "RESERVED"
    ]
    assert row.split() == ["cn1", "rack1", "up", "198.18.0.7", "-", "-", "no", "yes"]

    page = json.loads(_ok(vmha("host", "list", "--segment", "rack1", "--json")))
    assert page["next_marker"] is None
    [host] = page["items"]
    assert host["fence_levels"] == [["redfish"], ["ipmi", "agent_watchdog"]]
    assert host["capacity"] == {"vcpus": 16, "ram_mb": 65536, "disk_gb": 500}

    updated = json.loads(_ok(vmha("host", "update", "cn1", "--ram-mb", "1024", "--json")))
    assert updated["capacity"] == {"vcpus": 16, "ram_mb": 1024, "disk_gb": 500}


def test_api_error_is_one_line(vmha: Vmha) -> None:
    result = vmha("host", "show", "h9")
    assert result.exit_code == 1
    assert result.stderr == "error: 404 Not found: host 'h9' does not exist\n"
    assert result.stdout == ""

    bad = vmha("host", "create", "bad", "--segment", "nowhere")
    assert bad.exit_code == 1
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: 422 Invalid input: body.segment: segment 'nowhere'")


def test_missing_token_and_wrong_role(vmha: Vmha) -> None:
    result = vmha("segment", "list", token=None)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 401 Unauthorized: missing bearer token")
    refused = vmha("segment", "create", "nope", token=VIEWER)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: 403 Forbidden: role 'viewer' may not do this")


def test_connection_refused_is_one_line(vmha_offline: Vmha) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = vmha_offline("host", "list", "--url", url, "--token", "x")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot reach the vmha API at {url} (connection refused); start it with "
        "'vmha serve' or point --url / VMHA_URL at a running controller\n"
    )
    assert "Traceback" not in result.output


def test_instances_policies_and_effective_policy(vmha: Vmha, tmp_path: Path) -> None:
    policy_file = tmp_path / "gold.yaml"
    policy_file.write_text("host: auto+notify\npriority: 900\nprobes:\n"
                           "  - {kind: tcp, target: '22'}\n")
    _ok(vmha("policy", "create", "gold", "--policy-file", str(policy_file),
             "--description", "critical"))
    table = _ok(vmha("policy", "list"))
    assert table.splitlines()[1].split()[:5] == ["gold", "auto+notify", "auto", "notify", "900"]

    _ok(vmha("segment", "create", "pool", "--default-policy", "gold"))
    _ok(vmha("host", "create", "cn7", "--segment", "pool"))
    created = json.loads(_ok(vmha("instance", "create", "web", "--id", "web-1", "--host", "cn7",
                                  "--project", "shop", "--vcpus", "2", "--json")))
    assert (created["id"], created["project"], created["resources"]["vcpus"]) == (
        "web-1", "shop", 2)
    effective = json.loads(_ok(vmha("instance", "policy", "web-1", "--json")))
    assert (effective["source"], effective["name"]) == ("segment", "gold")
    assert effective["policy"]["probes"][0]["target"] == "22"

    bad = tmp_path / "bad.json"
    bad.write_text('{"priority": 5000}')
    refused = vmha("instance", "update", "web-1", "--policy-file", str(bad))
    assert refused.exit_code == 1
    assert "body.policy.priority" in refused.stderr

    listed = _ok(vmha("instance", "list", "--project", "shop"))
    assert listed.splitlines()[1].split() == ["web-1", "web", "shop", "cn7", "running", "-"]
    assert _ok(vmha("instance", "delete", "web-1")) == "deleted instance web-1\n"
    assert vmha("instance", "show", "web-1").exit_code == 1


def test_maintenance_and_events(vmha: Vmha) -> None:
    _ok(vmha("segment", "create", "rack2"))
    _ok(vmha("host", "create", "cn2", "--segment", "rack2"))
    on = _ok(vmha("host", "maintenance", "cn2", "--on", "--reason", "bios update"))
    assert on == "host cn2: state maintenance, maintenance on\n"
    _ok(vmha("host", "maintenance", "cn2", "--off"))

    lines = _ok(vmha("event", "list", "--type", "host.maintenance_*")).splitlines()
    mine = [line for line in lines if "host/cn2" in line]
    assert len(mine) == 2
    assert " host.maintenance_on host/cn2 [info] " in mine[0]
    assert "reason=bios update" in mine[0] and "by=ops" in mine[0]
    assert " host.maintenance_off host/cn2 " in mine[1]

    page = json.loads(_ok(vmha("event", "list", "--json", "--subject", "cn2")))
    first_id = page["items"][0]["id"]

    tail = _ok(vmha("event", "tail", "--since", str(first_id), "--count", "1"))
    assert [line.split()[2] for line in tail.splitlines() if "cn2" in line] == [
        "host.maintenance_off"]


def test_jobs(vmha: Vmha, server: Any) -> None:
    job = Job("job-7", JobKind.HOST_RECOVERY, "cn9", state=JobState.EVACUATING,
              created_at=1000.0, updated_at=1010.0, reason="host cn9 failed")
    job = finish_step(start_step(job, "fence", 1001.0), "fence", 1003.25, detail="ipmi off")
    server.controller.store.create_job(start_step(job, "evacuate", 1004.0))

    listed = _ok(vmha("job", "list"))
    assert listed.splitlines()[1].split()[:5] == ["job-7", "host_recovery", "cn9",
                                                  "evacuating", "2"]
    shown = _ok(vmha("job", "show", "job-7"))
    assert shown.startswith("job job-7 (host_recovery) on cn9: evacuating, generation 1")
    assert "reason: host cn9 failed" in shown
    fence = next(line for line in shown.splitlines() if line.startswith("fence"))
    assert fence.split()[1] == "done" and "2.250s" in fence and "ipmi off" in fence
    evacuate = next(line for line in shown.splitlines() if line.startswith("evacuate"))
    assert evacuate.split()[1] == "running"
    as_json = json.loads(_ok(vmha("job", "show", "job-7", "--json")))
    assert as_json["steps"][0]["duration_s"] == 2.25
    server.controller.store.create_job(Job(
        "job-8", JobKind.ACTION, "vm1", state=JobState.DONE, created_at=1020.0,
        data=ActionData(instance="vm1", action="stop", project="p1")))
    mine = json.loads(_ok(vmha("job", "list", "--project", "p1", "--json")))
    assert [j["id"] for j in mine["items"]] == ["job-8"]  # never the host's job-7


def test_instance_create_with_a_spec(vmha: Vmha, tmp_path: Path) -> None:
    _ok(vmha("segment", "create", "lab"))
    _ok(vmha("host", "create", "hv1", "--segment", "lab"))
    created = json.loads(_ok(vmha(
        "instance", "create", "vm1", "--host", "hv1", "--image", "lab",
        "--address", "198.18.1.11/24", "--health-url", "http://198.18.1.11:8080/health",
        "--json")))
    assert created["spec"]["image"] == "lab"
    assert created["spec"]["address"] == "198.18.1.11/24"
    xml = tmp_path / "vm2.xml"
    xml.write_text("<domain type='qemu'><name>x</name></domain>")
    created = json.loads(_ok(vmha("instance", "create", "vm2", "--domain-xml", str(xml),
                                  "--json")))
    assert created["spec"]["xml"].startswith("<domain")
    both = vmha("instance", "create", "vm3", "--domain-xml", str(xml), "--image", "lab")
    assert both.exit_code != 0 and "not both" in both.stderr
    lonely = vmha("instance", "create", "vm3", "--address", "198.18.1.13/24")
    assert lonely.exit_code != 0 and "need --image" in lonely.stderr
    bad = vmha("instance", "create", "vm3", "--image", "lab", "--address", "nope")
    assert bad.exit_code != 0 and "spec.address" in bad.stderr


def test_bad_since_and_non_ascii_token_are_one_clear_line(vmha_offline: Vmha) -> None:
    for command in ("tail", "list"):
        result = vmha_offline("event", command, "--since", "-5")
        assert result.exit_code == 2 and "--since" in result.output, result.output
        assert "Last-Event-ID" not in result.output
        big = vmha_offline("event", command, "--since", str(2**64))
        assert big.exit_code == 2 and "--since" in big.output, big.output
    result = vmha_offline("host", "list", env={"VMHA_TOKEN": "tök\u00e9n"})
    assert result.exit_code == 2, result.output
    assert "printable ASCII" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
