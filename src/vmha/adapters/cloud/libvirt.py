"""LibvirtCloud: the Cloud port for plain libvirt/KVM clusters.

vmha owns the instance definitions here (DESIGN.md, the embedded default).
The controller never opens libvirt itself: every domain operation goes to
the agent of the host concerned, over its HTTP API (`PUT /v1/domains/{uuid}`,
`POST /v1/domains/{uuid}/actions`, `GET /v1/domains/{uuid}`; see
docs/agent.md), found through the agent records in the store. Operations
are idempotent and keyed by the domain UUID derived from the instance id
(`domain_uuid`), so a resumed recovery job can repeat any of them.

Definitions: an instance's `spec` is a template (image, address, ...) that
is rendered with `domxml.render_domain` using the controller's image
directory, or a whole domain XML whose name and uuid are set here. The
guest watchdog's hypervisor action comes from the instance's HA policy:
reset/poweroff/pause act at once in QEMU; notify, restart and none leave
the device inert and vmha reacts to the event instead.

`instance_state` says `running` only when the domain runs and, when the
spec has a `health_url`, the application answers it; a booting guest reads
as `building` (`checks_app` says which instances: vmha.ports.AppChecked).
Escalation steps inside the guest (GuestControl) go to the agent too:
`exec:` through `POST /v1/domains/{uuid}/exec` (the QEMU guest agent),
`reboot` as the domain action. Host enable/disable are no-ops: vmha's own
planner is the scheduler and reads host states directly.

Called by the engine (recovery jobs, restarts) through the port; it must
not decide anything.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from vmha.adapters.cloud.domxml import DomainSpec, guest_cmdline, render_domain
from vmha.domain.errors import Conflict, NotFound, TemporaryError, ValidationError, VmhaError
from vmha.domain.model import Instance, InstanceState
from vmha.domain.policy import HAPolicy, WatchdogAction
from vmha.domain.spec import InstanceSpec
from vmha.ports import GuestResult, Store

log = logging.getLogger(__name__)

_NAMESPACE = uuidlib.UUID("6f1c2f57-2a4e-4e43-9d55-8d1f3c2a7e01")  # vmha instance ids
_STATES = {
    "running": InstanceState.RUNNING, "paused": InstanceState.PAUSED,
    "shutoff": InstanceState.STOPPED, "crashed": InstanceState.CRASHED,
    "pmsuspended": InstanceState.PAUSED, "absent": InstanceState.UNKNOWN,
}
_DEVICE_ACTION = {
    WatchdogAction.RESET: "reset", WatchdogAction.RESET_NOTIFY: "reset",
    WatchdogAction.POWEROFF: "poweroff", WatchdogAction.PAUSE: "pause",
}


def domain_uuid(instance_id: str) -> str:
    """The libvirt UUID of an instance: its id when that is a UUID, else a
    stable name-based UUID of it (ids like `web-1` are allowed)."""
    try:
        return str(uuidlib.UUID(instance_id))
    except ValueError:
        return str(uuidlib.uuid5(_NAMESPACE, instance_id))


def watchdog_device_action(policy: HAPolicy) -> str:
    """What QEMU's i6300esb does by itself when the guest stops feeding it."""
    return _DEVICE_ACTION.get(policy.watchdog_action, "none")


def image_paths(image_dir: Path, image: str) -> tuple[Path, Path]:
    """Kernel and initrd of a named image (ValidationError when absent). An
    uncompressed `vmlinux` (PVH boot, much faster under TCG) wins over `vmlinuz`."""
    folder = image_dir / image
    kernels = [k for k in (folder / "vmlinux", folder / "vmlinuz") if k.is_file()]
    initrd = folder / "initrd.img"
    if not kernels or not initrd.is_file():
        raise ValidationError("spec.image", f"image {image!r} is not in {image_dir}: expected "
                              f"{folder}/vmlinuz (or vmlinux) and {initrd} "
                              "(`vmha lab image build --dir DIR` makes one)")
    return kernels[0], initrd


def domain_xml(instance: Instance, spec: InstanceSpec, policy: HAPolicy,
               image_dir: Path | None) -> str:
    """The domain XML that defines `instance` (pure apart from checking that
    the image files exist)."""
    uuid = domain_uuid(instance.id)
    if spec.xml:
        return _own_xml(spec.xml, instance.name, uuid)
    if image_dir is None:
        raise ValidationError("spec.image", "the controller has no [cloud] image_dir; "
                              "set it to the directory holding the images")
    kernel, initrd = image_paths(image_dir, spec.image)
    cmdline = guest_cmdline(instance.name, spec.address, spec.gateway or None,
                            spec.watchdog_s) if spec.address else "console=ttyS0 panic=0"
    return render_domain(DomainSpec(
        uuid=uuid, name=instance.name, kernel=str(kernel), initrd=str(initrd), cmdline=cmdline,
        vcpus=instance.resources.vcpus or 1, memory_mb=instance.resources.ram_mb or 128,
        bridge=spec.bridge or None, mac=spec.mac or None,
        watchdog_action=watchdog_device_action(policy),
    ))


def _own_xml(xml: str, name: str, uuid: str) -> str:
    try:
        root = ET.fromstring(xml)  # noqa: S314 - an admin's own domain definition
    except ET.ParseError as exc:
        raise ValidationError("spec.xml", f"is not well-formed XML: {exc}") from exc
    if root.tag != "domain":
        raise ValidationError("spec.xml", f"root element is <{root.tag}>, not <domain>")
    for tag, value in (("name", name), ("uuid", uuid)):
        node = root.find(tag)
        if node is None:
            node = ET.SubElement(root, tag)
        node.text = value
    return ET.tostring(root, encoding="unicode")


class LibvirtCloud:
    """The Cloud port over the hosts' agents."""

    def __init__(self, store: Store, policy_of: Callable[[Instance], Awaitable[HAPolicy]],
                 image_dir: Path | None, request_timeout_s: float = 30.0,
                 health_timeout_s: float = 1.0, client: httpx.AsyncClient | None = None) -> None:
        self._store = store
        self._policy_of = policy_of
        self._image_dir = image_dir
        self._timeout = request_timeout_s
        self._health_timeout = health_timeout_s
        self._client = client or httpx.AsyncClient()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the port ---------------------------------------------------------------

    async def start_instance(self, instance: Instance, host: str, stopped: bool = False) -> None:
        if instance.spec is None:
            raise ValidationError("spec", f"instance {instance.name} has no spec: vmha cannot "
                                  "define it; give it one (PATCH /v1/instances/{id})")
        xml = domain_xml(instance, instance.spec, await self._policy_of(instance),
                         self._image_dir)
        uuid = domain_uuid(instance.id)
        view = await self._call(host, "PUT", f"/v1/domains/{uuid}",
                                {"xml": xml, "start": not stopped})
        log.info("instance %s: defined on %s%s (domain state %s)", instance.name, host,
                 "" if stopped else " and started", view.get("state"))

    async def stop_instance(self, instance: Instance, host: str) -> None:
        await self._action(instance, host, "destroy")

    async def reset_instance(self, instance: Instance, host: str) -> None:
        await self._action(instance, host, "reset")

    async def instance_state(self, instance: Instance, host: str) -> InstanceState:
        view = await self._call(host, "GET", f"/v1/domains/{domain_uuid(instance.id)}")
        state = _STATES.get(str(view.get("state")), InstanceState.UNKNOWN)
        url = instance.spec.health_url if instance.spec is not None else ""
        if state is InstanceState.RUNNING and url and not await self._app_answers(url):
            return InstanceState.BUILDING
        return state

    def checks_app(self, instance: Instance) -> bool:
        """`instance_state` waits for the application (vmha.ports.AppChecked)."""
        return bool(instance.spec is not None and instance.spec.health_url)

    async def disable_host(self, host: str, reason: str) -> None:
        log.debug("libvirt: %s out of scheduling (%s); vmha's planner reads host states", host,
                  reason)

    async def enable_host(self, host: str) -> None:
        log.debug("libvirt: %s back in scheduling", host)

    # -- inside the guest (vmha.ports.GuestControl) -----------------------------

    async def exec_in_guest(self, instance: Instance, host: str, command: Sequence[str],
                            timeout_s: float) -> GuestResult:
        """Run `command` in the guest through its QEMU guest agent (the host
        agent's `POST /v1/domains/{uuid}/exec`)."""
        uuid = domain_uuid(instance.id)
        out = await self._call(host, "POST", f"/v1/domains/{uuid}/exec",
                               {"command": list(command), "timeout_s": timeout_s})
        return exec_result(out)

    async def reboot_instance(self, instance: Instance, host: str) -> None:
        """Ask the guest to reboot (guest agent, else ACPI)."""
        await self._action(instance, host, "reboot")

    # -- beyond the port: for actions and the lab -------------------------------

    async def action(self, instance: Instance, host: str, action: str) -> str:
        """Run a domain action (start, destroy, reset, reboot, shutdown,
        undefine, inject-nmi) on `host`; the domain state after it."""
        return str((await self._action(instance, host, action)).get("state"))

    async def domains(self, host: str) -> list[dict[str, Any]]:
        found = (await self._call(host, "GET", "/v1/domains")).get("domains", [])
        return list(found) if isinstance(found, list) else []

    # -- plumbing ---------------------------------------------------------------

    async def _action(self, instance: Instance, host: str, action: str) -> dict[str, Any]:
        uuid = domain_uuid(instance.id)
        return await self._call(host, "POST", f"/v1/domains/{uuid}/actions", {"action": action})

    async def _app_answers(self, url: str) -> bool:
        try:
            response = await self._client.get(url, timeout=self._health_timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _agent(self, host: str) -> tuple[str, str]:
        try:
            agent = await asyncio.to_thread(self._store.get_agent, host)
        except NotFound as exc:
            raise TemporaryError(f"host {host} has no registered agent; start vmha agent "
                                 "there", 10.0) from exc
        if not agent.api_url:
            raise TemporaryError(f"the agent of {host} registered no API URL", 10.0)
        return agent.api_url.rstrip("/"), agent.api_token

    async def _call(self, host: str, method: str, path: str,
                    body: dict[str, Any] | None = None) -> dict[str, Any]:
        base, token = await self._agent(host)
        try:
            response = await self._client.request(
                method, base + path, json=body, timeout=self._timeout,
                headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise TemporaryError(f"the agent of {host} did not answer {method} {path}: "
                                 f"{type(exc).__name__}", 2.0) from exc
        if response.status_code >= 400:
            raise _translate(host, method, path, response)
        data = response.json()
        return data if isinstance(data, dict) else {}


def exec_result(out: dict[str, Any]) -> GuestResult:
    """The agent's exec answer in words: exit code or signal, or the
    timeout. The guest's output is not repeated: it is the tenant's and
    may hold anything (the agent's log has its size)."""
    took = f" in {float(out.get('duration_s') or 0):.1f} s"
    if out.get("timed_out"):
        return GuestResult(False, f"timed out{took}")
    code, signal = out.get("exitcode"), out.get("signal")
    if code == 0:
        return GuestResult(True, f"exit 0{took}")
    what = f"killed by signal {signal}" if signal else f"exit {code}"
    return GuestResult(False, f"{what}{took}")


def _translate(host: str, method: str, path: str, response: httpx.Response) -> VmhaError:
    try:
        detail = str(response.json().get("detail", ""))
    except ValueError:
        detail = response.text[:200]
    what = f"{host} refused {method} {path}: {detail or response.status_code}"
    if response.status_code in (404, 503):
        return TemporaryError(what, 5.0)
    if response.status_code == 409:
        return Conflict(what)
    if response.status_code in (400, 422):
        return ValidationError("spec", what)
    return TemporaryError(what, 2.0)
