"""LibvirtCloud: what it asks the agents, and how it reads their answers.

The agent's HTTP API is replaced by httpx.MockTransport here; the real
agents and real QEMU guests drive this adapter in tests/e2e.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from vmha.adapters.cloud.libvirt import LibvirtCloud, domain_uuid, domain_xml
from vmha.adapters.store.fake import FakeStore
from vmha.domain.agents import AgentRecord
from vmha.domain.errors import Conflict, TemporaryError, ValidationError
from vmha.domain.model import Capacity, Host, Instance, InstanceState, Segment
from vmha.domain.policy import HAPolicy, WatchdogAction
from vmha.domain.spec import InstanceSpec

SPEC = InstanceSpec(image="lab", address="198.18.1.11/24",
                    health_url="http://198.18.1.11:8080/health")


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    (tmp_path / "lab").mkdir()
    for name in ("vmlinuz", "initrd.img"):
        (tmp_path / "lab" / name).write_bytes(b"x")
    return tmp_path


def store() -> FakeStore:
    s = FakeStore()
    s.create_segment(Segment("lab"))
    s.create_host(Host("host1", "lab"))
    s.create_host(Host("host2", "lab"))
    s.save_agent(AgentRecord("host1", "s" * 32, "http://198.18.0.11:8792", "agent-token"))
    return s


def cloud(handler: object, image_dir: Path | None, policy: HAPolicy | None = None) -> LibvirtCloud:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]

    async def policy_of(_inst: Instance) -> HAPolicy:
        return policy or HAPolicy()

    return LibvirtCloud(store(), policy_of, image_dir, client=client)


def vm(spec: InstanceSpec | None = SPEC) -> Instance:
    return Instance("vm-1", "vm1", "host1", resources=Capacity(1, 160, 0), spec=spec)


def test_domain_uuid_keeps_uuids_and_derives_one_for_other_ids() -> None:
    real = str(uuid.uuid4())
    assert domain_uuid(real) == real
    assert domain_uuid("vm-1") == domain_uuid("vm-1") != domain_uuid("vm-2")
    uuid.UUID(domain_uuid("vm-1"))


@pytest.mark.parametrize(("action", "device"), [
    (WatchdogAction.RESET, "reset"), (WatchdogAction.RESET_NOTIFY, "reset"),
    (WatchdogAction.POWEROFF, "poweroff"), (WatchdogAction.PAUSE, "pause"),
    (WatchdogAction.NOTIFY, "none"), (WatchdogAction.RESTART, "none"),
    (WatchdogAction.NONE, "none"),
])
def test_the_policy_sets_the_watchdog_device_action(
    image_dir: Path, action: WatchdogAction, device: str
) -> None:
    root = ET.fromstring(domain_xml(  # noqa: S314 - our own output
        vm(), SPEC, HAPolicy(watchdog_action=action), image_dir))
    assert root.find("devices/watchdog").get("action") == device
    assert root.findtext("uuid") == domain_uuid("vm-1")
    assert root.findtext("name") == "vm1"
    assert root.findtext("memory") is not None
    assert "vmha.ip=198.18.1.11/24" in root.findtext("os/cmdline")
    assert root.findtext("os/kernel") == str(image_dir / "lab" / "vmlinuz")


def test_a_given_domain_xml_gets_the_instances_name_and_uuid(image_dir: Path) -> None:
    spec = InstanceSpec(xml="<domain type='qemu'><name>other</name><memory>1</memory></domain>")
    root = ET.fromstring(domain_xml(  # noqa: S314 - our own output
        vm(spec), spec, HAPolicy(), None))
    assert (root.findtext("name"), root.findtext("uuid")) == ("vm1", domain_uuid("vm-1"))
    assert root.findtext("memory") == "1"


def test_missing_image_or_image_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no \\[cloud\\] image_dir"):
        domain_xml(vm(), SPEC, HAPolicy(), None)
    with pytest.raises(ValidationError, match="image 'lab' is not in"):
        domain_xml(vm(), SPEC, HAPolicy(), tmp_path)


def test_start_puts_the_rendered_domain_on_the_hosts_agent(image_dir: Path) -> None:
    seen: list[httpx.Request] = []

    def agent(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"uuid": domain_uuid("vm-1"), "state": "running"})

    asyncio.run(cloud(agent, image_dir).start_instance(vm(), "host1"))
    asyncio.run(cloud(agent, image_dir).start_instance(vm(), "host1", stopped=True))
    first, second = seen
    assert first.method == "PUT"
    assert str(first.url) == f"http://198.18.0.11:8792/v1/domains/{domain_uuid('vm-1')}"
    assert first.headers["authorization"] == "Bearer agent-token"
    body = json.loads(first.content)
    assert body["start"] is True and "<domain" in body["xml"]
    assert json.loads(second.content)["start"] is False


def test_stop_and_reset_are_domain_actions(image_dir: Path) -> None:
    actions: list[str] = []

    def agent(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/actions")
        actions.append(json.loads(request.content)["action"])
        return httpx.Response(200, json={"state": "shutoff"})

    c = cloud(agent, image_dir)
    asyncio.run(c.stop_instance(vm(), "host1"))
    asyncio.run(c.reset_instance(vm(), "host1"))
    assert actions == ["destroy", "reset"]


def test_running_means_the_application_answers_when_a_health_url_is_set(
    image_dir: Path,
) -> None:
    app_up = {"value": False}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "198.18.1.11":
            return httpx.Response(200 if app_up["value"] else 503)
        return httpx.Response(200, json={"state": "running"})

    c = cloud(handler, image_dir)
    assert asyncio.run(c.instance_state(vm(), "host1")) is InstanceState.BUILDING
    app_up["value"] = True
    assert asyncio.run(c.instance_state(vm(), "host1")) is InstanceState.RUNNING
    bare = vm(InstanceSpec(image="lab"))
    app_up["value"] = False
    assert asyncio.run(c.instance_state(bare, "host1")) is InstanceState.RUNNING


@pytest.mark.parametrize(("state", "expected"), [
    ("shutoff", InstanceState.STOPPED), ("crashed", InstanceState.CRASHED),
    ("paused", InstanceState.PAUSED), ("absent", InstanceState.UNKNOWN),
])
def test_domain_states_map_to_instance_states(
    image_dir: Path, state: str, expected: InstanceState
) -> None:
    c = cloud(lambda r: httpx.Response(200, json={"state": state}), image_dir)
    assert asyncio.run(c.instance_state(vm(), "host1")) is expected


def test_agent_errors_are_translated(image_dir: Path) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    c = cloud(refused, image_dir)
    with pytest.raises(TemporaryError, match="agent of host1 did not answer"):
        asyncio.run(c.stop_instance(vm(), "host1"))
    c = cloud(lambda r: httpx.Response(409, json={"detail": "domain is not running"}), image_dir)
    with pytest.raises(Conflict, match=r"host1 refused POST .* domain is not running"):
        asyncio.run(c.reset_instance(vm(), "host1"))
    with pytest.raises(TemporaryError, match="host2 has no registered agent"):
        asyncio.run(c.stop_instance(vm(), "host2"))
    with pytest.raises(ValidationError, match="has no spec"):
        asyncio.run(c.start_instance(vm(None), "host1"))
