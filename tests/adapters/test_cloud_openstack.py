"""OpenStackCloud against a scripted Nova (unit level; the real Nova runs in
tests/e2e/test_openstack.py): request shapes, microversions, idempotency,
retries and error translation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from keystoneauth1 import exceptions as ks_exc

from vmha.adapters.cloud.openstack import Nova, OpenStackCloud, OpenStackOptions
from vmha.domain.errors import (
    NotFound,
    PermissionDenied,
    TemporaryError,
    Unauthenticated,
    ValidationError,
)
from vmha.domain.model import Instance, InstanceState


@dataclass
class Response:
    status_code: int
    body: Any = None

    @property
    def content(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return self.body


@dataclass
class ScriptedCompute:
    """Answers by (method, path without query); records every call."""

    routes: dict[tuple[str, str], Callable[[Any], Response]] = field(default_factory=dict)
    calls: list[tuple[str, str, str | None, Any]] = field(default_factory=list)

    def request(self, path: str, method: str, json: Any = None, microversion: str | None = None,
                raise_exc: bool = True) -> Response:
        self.calls.append((method, path, microversion, json))
        handler = self.routes.get((method, path.split("?")[0]))
        return handler(json) if handler else Response(404, {"itemNotFound": {"message": path}})


@dataclass
class Conn:
    compute: ScriptedCompute


def server(host: str, status: str = "ACTIVE", task: str | None = None) -> Response:
    return Response(200, {"server": {"id": "s1", "status": status,
                                     "OS-EXT-SRV-ATTR:host": host,
                                     "OS-EXT-STS:task_state": task}})


def make(routes: dict[tuple[str, str], Callable[[Any], Response]],
         retry_s: float = 0.0) -> tuple[OpenStackCloud, ScriptedCompute]:
    compute = ScriptedCompute(routes)
    cloud = OpenStackCloud(Nova(Conn(compute)), OpenStackOptions(retry_s=retry_s,
                                                                  retry_max_delay_s=0.05))
    return cloud, compute


INST = Instance(id="s1", name="vm1", host="host1")
SERVICE = {"id": "uuid-1", "host": "host1", "status": "enabled", "forced_down": False,
           "disabled_reason": None}


def services(**changes: Any) -> Callable[[Any], Response]:
    return lambda _: Response(200, {"services": [{**SERVICE, **changes}]})


def test_disable_forces_down_and_disables_with_the_reason_at_2_53() -> None:
    cloud, nova = make({("GET", "/os-services"): services(),
                        ("PUT", "/os-services/uuid-1"): lambda b: Response(200, {"service": b})})
    asyncio.run(cloud.disable_host("host1", "vmha job j1: host failed and fenced"))
    assert nova.calls[-1] == ("PUT", "/os-services/uuid-1", "2.53", {
        "status": "disabled", "forced_down": True,
        "disabled_reason": "vmha job j1: host failed and fenced"})


def test_disable_twice_changes_nothing_the_second_time() -> None:
    cloud, nova = make({("GET", "/os-services"): services(status="disabled", forced_down=True)})
    asyncio.run(cloud.disable_host("host1", "vmha job j1"))
    assert [c[0] for c in nova.calls] == ["GET"]


def test_enable_leaves_an_operators_disable_alone() -> None:
    cloud, nova = make({("GET", "/os-services"): services(
        status="disabled", disabled_reason="hardware swap (ops ticket 12)")})
    asyncio.run(cloud.enable_host("host1"))
    assert [c[0] for c in nova.calls] == ["GET"]


def test_enable_undoes_vmhas_own_force_down() -> None:
    cloud, nova = make({("GET", "/os-services"): services(
        status="disabled", forced_down=True, disabled_reason="vmha job j1"),
        ("PUT", "/os-services/uuid-1"): lambda b: Response(200, {"service": b})})
    asyncio.run(cloud.enable_host("host1"))
    assert nova.calls[-1][3] == {"status": "enabled", "forced_down": False}


@pytest.mark.parametrize(("stopped", "target", "mv", "body"), [
    (False, "host2", "2.68", {"evacuate": {"host": "host2"}}),
    (True, "host2", "2.95", {"evacuate": {"host": "host2"}}),
    (False, "scheduler", "2.68", {"evacuate": {}}),
])
def test_evacuate_picks_the_microversion_and_target(stopped: bool, target: str, mv: str,
                                                    body: dict[str, Any]) -> None:
    cloud, nova = make({("GET", "/servers/s1"): lambda _: server("host1"),
                        ("POST", "/servers/s1/action"): lambda _: Response(200, {})})
    asyncio.run(cloud.start_instance(INST, target, stopped))
    assert nova.calls[-1] == ("POST", "/servers/s1/action", mv, body)


def test_a_server_already_on_the_target_is_not_evacuated_again() -> None:
    cloud, nova = make({("GET", "/servers/s1"): lambda _: server("host2", task="rebuilding")})
    asyncio.run(cloud.start_instance(INST, "host2"))
    assert [c[0] for c in nova.calls] == ["GET"]


def test_start_on_the_host_it_is_on_starts_a_stopped_server_and_waits_for_active() -> None:
    """The actions API's `start` (and the second half of `restart`): it
    returns once Nova has the server ACTIVE, not when Nova accepted the start
    (the e2e test read SHUTOFF right after a finished start job)."""
    answers = [server("host1", "SHUTOFF"), server("host1", "SHUTOFF", task="powering-on"),
               server("host1")]
    cloud, nova = make({("GET", "/servers/s1"): lambda _: answers.pop(0),
                        ("POST", "/servers/s1/action"): lambda _: Response(202, None)},
                       retry_s=10)
    asyncio.run(cloud.start_instance(INST, "host1"))
    assert answers == []
    assert [c for c in nova.calls if c[0] == "POST"] == [
        ("POST", "/servers/s1/action", "2.68", {"os-start": None})]
    answers.append(server("host1", "SHUTOFF"))
    asyncio.run(cloud.start_instance(INST, "host1", stopped=True))  # left stopped
    assert [c[0] for c in nova.calls].count("POST") == 1


def test_a_start_nova_puts_in_error_fails_at_once() -> None:
    answers = [server("host1", "SHUTOFF"), server("host1", "ERROR")]
    cloud, _ = make({("GET", "/servers/s1"): lambda _: answers.pop(0),
                     ("POST", "/servers/s1/action"): lambda _: Response(202, None)}, retry_s=10)
    with pytest.raises(ValidationError, match="in ERROR while starting"):
        asyncio.run(cloud.start_instance(INST, "host1"))


def test_stop_returns_once_nova_has_it_stopped() -> None:
    answers = [server("host1"), server("host1", task="powering-off"), server("host1", "SHUTOFF")]
    cloud, nova = make({("GET", "/servers/s1"): lambda _: answers.pop(0),
                        ("POST", "/servers/s1/action"): lambda _: Response(202, None)},
                       retry_s=10)
    asyncio.run(cloud.stop_instance(INST, "host1"))
    assert answers == [] and [c[3] for c in nova.calls if c[0] == "POST"] == [{"os-stop": None}]


def test_rebuild_uses_the_servers_own_image() -> None:
    body = {"server": {"id": "s1", "status": "ACTIVE", "OS-EXT-SRV-ATTR:host": "host1",
                       "OS-EXT-STS:task_state": None, "image": {"id": "img-1"}}}
    cloud, nova = make({("GET", "/servers/s1"): lambda _: Response(200, body),
                        ("POST", "/servers/s1/action"): lambda _: Response(202, None)})
    asyncio.run(cloud.rebuild_instance(INST, "host1"))
    assert nova.calls[-1][3] == {"rebuild": {"imageRef": "img-1"}}
    body["server"]["image"] = ""  # boots from a volume
    with pytest.raises(ValidationError, match="boots from a volume"):
        asyncio.run(cloud.rebuild_instance(INST, "host1"))


def test_evacuate_retries_while_nova_still_sees_the_source_up() -> None:
    answers = [Response(400, {"badRequest": {"message": "Compute service of host1 is still "
                                                        "in use."}}), Response(200, {})]
    cloud, nova = make({("GET", "/servers/s1"): lambda _: server("host1"),
                        ("POST", "/servers/s1/action"): lambda _: answers.pop(0)}, retry_s=5)
    asyncio.run(cloud.start_instance(INST, "host2"))
    assert [c[0] for c in nova.calls].count("POST") == 2


def test_evacuate_gives_up_after_retry_s_with_a_temporary_error() -> None:
    cloud, _ = make({("GET", "/servers/s1"): lambda _: Response(503, {})}, retry_s=0.2)
    with pytest.raises(TemporaryError, match="Nova answered 503"):
        asyncio.run(cloud.start_instance(INST, "host2"))


def migrations(*states: str) -> Callable[[Any], Response]:
    return lambda _: Response(200, {"migrations": [
        {"id": i, "status": s, "dest_compute": "host2", "created_at": f"2026-01-0{i + 1}"}
        for i, s in enumerate(states)]})


@pytest.mark.parametrize(("srv", "migs", "expected"), [
    (server("host1"), (), InstanceState.UNKNOWN),  # not on the asked host
    (server("host2", task="rebuilding"), ("accepted",), InstanceState.BUILDING),
    (server("host2"), ("pre-migrating",), InstanceState.BUILDING),
    (server("host2"), ("done",), InstanceState.RUNNING),
    (server("host2", "SHUTOFF"), ("error", "done"), InstanceState.STOPPED),  # newest wins
    (server("host2", "ERROR"), ("error",), InstanceState.ERROR),
    (server("host1", "ERROR"), ("error",), InstanceState.ERROR),  # NoValidHost: never moved
])
def test_state_reads_the_server_and_its_newest_evacuation(
        srv: Response, migs: tuple[str, ...], expected: InstanceState) -> None:
    cloud, _ = make({("GET", "/servers/s1"): lambda _: srv,
                     ("GET", "/os-migrations"): migrations(*migs)})
    assert asyncio.run(cloud.instance_state(INST, "host2")) is expected


@pytest.mark.parametrize(("srv", "migs", "expected"), [
    (server("host1"), ("accepted",), InstanceState.BUILDING),  # not left the failed host yet
    (server("host3", task="rebuilding"), ("accepted",), InstanceState.BUILDING),
    (server("host3"), ("pre-migrating",), InstanceState.BUILDING),
    (server("host3"), ("done",), InstanceState.RUNNING),  # wherever Nova sent it
    (server("host3", "SHUTOFF"), ("error", "done"), InstanceState.STOPPED),
    (server("host1", "ERROR"), ("done", "error"), InstanceState.ERROR),  # NoValidHost
])
def test_state_of_a_move_left_to_novas_scheduler(
        srv: Response, migs: tuple[str, ...], expected: InstanceState) -> None:
    cloud, _ = make({("GET", "/servers/s1"): lambda _: srv,
                     ("GET", "/os-migrations"): migrations(*migs)})
    assert asyncio.run(cloud.instance_state(INST, "scheduler")) is expected


def test_a_server_nova_already_moved_off_its_host_is_not_evacuated_again() -> None:
    """A resumed job whose move Nova's scheduler placed: the server left
    vmha's recorded host (host1), so the evacuation was accepted before."""
    cloud, nova = make({("GET", "/servers/s1"): lambda _: server("host3")})
    asyncio.run(cloud.start_instance(INST, "scheduler"))
    assert [c[0] for c in nova.calls] == ["GET"]
    assert asyncio.run(cloud.placed_on(INST)) == "host3"


@pytest.mark.parametrize(("status", "error"), [
    (401, Unauthenticated), (403, PermissionDenied), (404, NotFound),
    (422, ValidationError), (500, TemporaryError), (409, TemporaryError),
])
def test_http_errors_are_translated(status: int, error: type[Exception]) -> None:
    nova = Nova(Conn(ScriptedCompute({("GET", "/servers/s1"): lambda _: Response(
        status, {"x": {"message": "no"}})})))
    with pytest.raises(error):
        nova.server("s1")


def test_an_unreachable_cloud_is_a_temporary_error() -> None:
    class Down(ScriptedCompute):
        def request(self, *a: Any, **k: Any) -> Response:
            raise ks_exc.ConnectFailure("refused")

    with pytest.raises(TemporaryError, match="unreachable"):
        Nova(Conn(Down())).server("s1")
