"""OpenStackCloud: the Cloud port on a real Nova (extra `openstack`).

Nova does the placement and the restart; vmha decides when, after the
fence is confirmed (DESIGN.md). The port's calls map to Nova's API:

- `disable_host(host, reason)`: `PUT /os-services/{uuid}` with status
  disabled, `disabled_reason` (prefixed `vmha`) and `forced_down` (2.53);
- `start_instance(inst, target, stopped)`: `POST /servers/{id}/action`
  `{"evacuate": {"host": target}}` (no host for `scheduler`: Nova picks)
  at 2.68 (the server keeps ACTIVE or SHUTOFF) or 2.95 when `stopped`
  (it ends SHUTOFF);
- `instance_state(inst, host)`: `GET /servers/{id}` (host, status, task
  state) and its newest evacuation to that host in `GET /os-migrations`
  (2.59), which must have reached `done` (`error` when Nova refused or
  failed it, e.g. NoValidHost); for `scheduler`, its newest evacuation
  wherever Nova sent it, once the server left its old host;
- `placed_on(inst)`: the server's host (the Scheduling port);
- `start_instance` on the host the server is on: `os-start` when it is
  SHUTOFF and should run (the actions API's `start` and `restart`);
- `stop_instance`/`reset_instance`/`rebuild_instance`: `os-stop` / HARD
  `reboot` / `rebuild` from its own image, only while the server is on
  that host;
- `enable_host(host)`: the same PUT back to enabled and not forced down,
  only for a service vmha disabled (an operator's disable stays).

Idempotent: a server already on the target (or being rebuilt there) is
not evacuated again, so a resumed job never evacuates twice. Transient
failures (Nova or Keystone unreachable, 5xx, the source compute not yet
seen down) are retried here with backoff for up to `retry_s` (each
attempt in a thread; the waits are cancellable), then raised as
TemporaryError. Library and HTTP errors are translated at this boundary
into vmha's error tree. Tokens: keystoneauth re-authenticates when a
token expires or is revoked (a 401 is retried once with a new token).

`OpenStackAuth` is what to log in with (a clouds.yaml entry or explicit
values; secrets are never in repr); `connect` builds the openstacksdk
connection and `validate` checks it at start, naming the bad setting.
Called by the engine through the port and by `vmha serve`'s wiring; it
decides nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vmha.domain.errors import (
    ConfigError,
    NotFound,
    PermissionDenied,
    TemporaryError,
    Unauthenticated,
    ValidationError,
    VmhaError,
)
from vmha.domain.model import Instance, InstanceState

log = logging.getLogger("vmha.cloud.openstack")
T = TypeVar("T")

MV_SERVICES = "2.53"
MV_READ = "2.68"
MV_MIGRATIONS = "2.59"
MV_EVACUATE = "2.68"
MV_EVACUATE_STOPPED = "2.95"
SCHEDULER = "scheduler"
VMHA_REASON = "vmha"  # prefix of the disabled_reason vmha writes
_STATES = {
    "ACTIVE": InstanceState.RUNNING, "SHUTOFF": InstanceState.STOPPED,
    "PAUSED": InstanceState.PAUSED, "SUSPENDED": InstanceState.PAUSED,
    "ERROR": InstanceState.ERROR, "BUILD": InstanceState.BUILDING,
    "REBUILD": InstanceState.BUILDING,
}
MIGRATION_DONE = frozenset({"done", "completed"})
MIGRATION_FAILED = frozenset({"error", "failed"})


@dataclass(frozen=True)
class OpenStackAuth:
    """How to reach the cloud: a clouds.yaml entry (`cloud`), or explicit
    values (password or application credential). `ca_bundle` verifies TLS."""

    cloud: str = ""
    auth_url: str = ""
    region_name: str = ""
    interface: str = "public"
    username: str = ""
    password: str = field(default="", repr=False)
    project_name: str = ""
    project_id: str = ""
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    application_credential_id: str = ""
    application_credential_secret: str = field(default="", repr=False)
    ca_bundle: str = ""
    verify: bool = True
    timeout_s: float = 30.0
    secret_setting: str = ""  # where the secret came from (`password_file`): errors name it

    def connect_args(self) -> dict[str, Any]:
        """openstacksdk `connect()` keyword arguments."""
        common: dict[str, Any] = {"interface": self.interface, "api_timeout": self.timeout_s,
                                  "load_envvars": False}
        if self.region_name:
            common["region_name"] = self.region_name
        if self.ca_bundle:
            common["cacert"] = self.ca_bundle
        if not self.verify:
            common["verify"] = False
        if self.cloud:
            return {"cloud": self.cloud, **common}
        if self.application_credential_id:
            auth = {"auth_url": self.auth_url,
                    "application_credential_id": self.application_credential_id,
                    "application_credential_secret": self.application_credential_secret}
            return {"auth_type": "v3applicationcredential", "auth": auth,
                    "load_yaml_config": False, **common}
        auth = {"auth_url": self.auth_url, "username": self.username,
                "password": self.password, "user_domain_name": self.user_domain_name,
                "project_domain_name": self.project_domain_name}
        auth.update({"project_id": self.project_id} if self.project_id
                    else {"project_name": self.project_name})
        return {"auth_type": "password", "auth": auth, "load_yaml_config": False, **common}


def connect(auth: OpenStackAuth) -> Any:
    """An openstacksdk Connection (no network yet), or ConfigError."""
    try:
        import openstack
        from openstack import exceptions as sdk_exc
    except ImportError as exc:
        raise ConfigError("[cloud] adapter = \"openstack\" needs openstacksdk: "
                          "pip install 'vmha[openstack]'") from exc
    try:
        return openstack.connect(**auth.connect_args())
    except sdk_exc.ConfigException as exc:
        where = f"openstack.cloud = {auth.cloud!r}" if auth.cloud else "openstack"
        raise ConfigError(f"{where}: {exc}") from exc


def validate(conn: Any, auth: OpenStackAuth) -> str:
    """Log in and find Nova; the compute API's newest microversion. A
    ConfigError names the setting at fault (one line)."""
    from keystoneauth1 import exceptions as ks_exc

    setting = f"openstack.cloud = {auth.cloud!r}" if auth.cloud else \
        f"openstack.auth_url = {auth.auth_url!r}"
    try:
        conn.session.get_token()
    except ks_exc.Unauthorized as exc:
        raise ConfigError(f"{_refused(auth)} (HTTP 401); check them") from exc
    except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.DiscoveryFailure,
            ks_exc.SSLError) as exc:
        raise ConfigError(f"{setting}: cannot reach Keystone ({type(exc).__name__})") from exc
    except ks_exc.ClientException as exc:
        raise ConfigError(f"{setting}: Keystone login failed ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from exc
    try:
        version = conn.compute.get_endpoint_data().max_microversion
    except (ks_exc.EndpointNotFound, ks_exc.CatalogException) as exc:
        raise ConfigError(f"openstack.region_name = {auth.region_name!r}: no compute "
                          f"endpoint in the catalog ({type(exc).__name__})") from exc
    except ks_exc.ClientException as exc:
        raise ConfigError(f"{setting}: cannot reach Nova ({type(exc).__name__})") from exc
    newest = ".".join(str(v) for v in version) if isinstance(version, tuple) else \
        str(version or "")
    if newest and _mv(newest) < _mv(MV_SERVICES):
        raise ConfigError(f"{setting}: Nova's newest microversion is {newest}; vmha needs "
                          f"{MV_SERVICES} or later")
    return newest


def _refused(auth: OpenStackAuth) -> str:
    """"<the setting>: Keystone refused ...": the clouds.yaml entry, or the
    setting the secret came from (never the secret)."""
    if auth.cloud:
        return (f"openstack.cloud = {auth.cloud!r}: Keystone refused the credentials of "
                "that clouds.yaml entry")
    app = bool(auth.application_credential_id)
    setting = auth.secret_setting or ("application_credential_secret" if app else "password")
    whose = (f" of application credential {auth.application_credential_id!r}" if app
             else f" of user {auth.username!r}" if auth.username else "")
    return f"openstack.{setting}: Keystone refused the credentials{whose}"


def _mv(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


# -- error translation -----------------------------------------------------------


def _message(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return str(resp.text)[:200]
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])[:300]
    return str(body)[:200]


def translate(what: str, resp: Any) -> VmhaError:
    """An HTTP error answer of Nova as a vmha error."""
    status, msg = resp.status_code, _message(resp)
    text = f"{what}: Nova answered {status}: {msg}"
    if status == 401:
        return Unauthenticated(f"{what}: Keystone/Nova refused vmha's credentials (401)")
    if status == 403:
        return PermissionDenied(f"{text}; vmha's OpenStack user needs the admin role")
    if status == 404:
        return NotFound("nova resource", what)
    if status == 400 and any(w in msg.lower() for w in ("in use", "migration record")):
        # ComputeServiceInUse: Nova still sees the source compute up; or it
        # keeps a host forced down until its evacuations are completed
        return TemporaryError(text, 2.0)
    if status == 409:
        return TemporaryError(text, 2.0)  # a task state in progress: try again
    if status in (400, 422):
        return ValidationError("openstack", text)
    return TemporaryError(text, 2.0)


def translate_exc(what: str, exc: Exception) -> VmhaError:
    """A keystoneauth/openstacksdk exception as a vmha error."""
    from keystoneauth1 import exceptions as ks_exc

    name = type(exc).__name__
    if isinstance(exc, ks_exc.Unauthorized):
        return Unauthenticated(f"{what}: Keystone refused vmha's credentials ({name})")
    if isinstance(exc, ks_exc.ConnectFailure | ks_exc.ConnectTimeout |
                  ks_exc.RequestTimeout | ks_exc.DiscoveryFailure | ks_exc.SSLError):
        return TemporaryError(f"{what}: cloud unreachable ({name})", 2.0)
    return TemporaryError(f"{what}: {name}: {str(exc)[:200]}", 2.0)


class Nova:
    """Synchronous calls to Nova through an openstacksdk connection;
    every call returns JSON or raises a vmha error."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def call(self, method: str, path: str, mv: str, body: Any = None) -> Any:
        from keystoneauth1 import exceptions as ks_exc

        what = f"{method} {path.split('?')[0]}"
        try:
            resp = self.conn.compute.request(path, method, json=body, microversion=mv,
                                             raise_exc=False)
        except ks_exc.ClientException as exc:
            raise translate_exc(what, exc) from exc
        if resp.status_code >= 400:
            raise translate(what, resp)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            return {}

    def image_props(self, image_id: str) -> dict[str, str]:
        """An image's properties (Glance v2 keeps them at the top level);
        {} when the image is gone or Glance cannot say."""
        from keystoneauth1 import exceptions as ks_exc

        try:
            resp = self.conn.image.request(f"/v2/images/{image_id}", "GET", raise_exc=False)
        except ks_exc.ClientException as exc:
            raise translate_exc(f"GET image {image_id}", exc) from exc
        if resp.status_code >= 400:
            return {}
        body = resp.json()
        return {str(k): str(v) for k, v in body.items() if isinstance(v, str | int | bool)}

    def service(self, host: str) -> dict[str, Any]:
        found = self.call("GET", f"/os-services?binary=nova-compute&host={host}",
                          MV_SERVICES).get("services", [])
        if not found:
            raise NotFound("nova-compute service", host)
        return dict(found[0])

    def set_service(self, service_id: str, body: dict[str, Any]) -> None:
        self.call("PUT", f"/os-services/{service_id}", MV_SERVICES, body)

    def server(self, server_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/servers/{server_id}", MV_READ)["server"])

    def action(self, server_id: str, body: dict[str, Any], mv: str = MV_EVACUATE) -> None:
        self.call("POST", f"/servers/{server_id}/action", mv, body)

    def evacuations(self, server_id: str) -> list[dict[str, Any]]:
        """This server's evacuations, newest first."""
        found = self.call("GET", f"/os-migrations?instance_uuid={server_id}"
                          "&migration_type=evacuation", MV_MIGRATIONS).get("migrations", [])
        return sorted(found, key=lambda m: (m.get("created_at") or "", m.get("id") or 0),
                      reverse=True)


def host_of(server: dict[str, Any]) -> str:
    return str(server.get("OS-EXT-SRV-ATTR:host") or "")


def task_of(server: dict[str, Any]) -> str:
    return str(server.get("OS-EXT-STS:task_state") or "")


@dataclass(frozen=True)
class OpenStackOptions:
    retry_s: float = 45.0  # how long one port call retries transient failures
    retry_max_delay_s: float = 5.0


class OpenStackCloud:
    """The Cloud port over Nova."""

    def __init__(self, nova: Nova, options: OpenStackOptions | None = None) -> None:
        self.nova = nova
        self.options = options or OpenStackOptions()

    async def _retrying(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        deadline = time.monotonic() + self.options.retry_s
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except TemporaryError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.info("%s: %s; retrying in %.1f s", what, exc.detail, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.retry_max_delay_s)

    # -- hosts ----------------------------------------------------------------

    async def disable_host(self, host: str, reason: str) -> None:
        await self._retrying(f"force down {host}", self._disable, host, reason)

    def _disable(self, host: str, reason: str) -> None:
        svc = self.nova.service(host)
        if svc.get("forced_down") and svc.get("status") == "disabled":
            return
        text = reason if reason.startswith(VMHA_REASON) else f"{VMHA_REASON}: {reason}"
        self.nova.set_service(str(svc["id"]), {"status": "disabled", "forced_down": True,
                                               "disabled_reason": text[:255]})
        log.info("nova-compute on %s forced down and disabled (%s)", host, text)

    async def enable_host(self, host: str) -> None:
        """One attempt: the engine retries a TemporaryError later."""
        await asyncio.to_thread(self._enable, host)

    def _enable(self, host: str) -> None:
        svc = self.nova.service(host)
        ours = str(svc.get("disabled_reason") or "").startswith(VMHA_REASON)
        if svc.get("status") == "disabled" and not ours:
            log.info("nova-compute on %s stays disabled: an operator disabled it (%s)", host,
                     svc.get("disabled_reason"))
            return
        if not svc.get("forced_down") and svc.get("status") == "enabled":
            return
        self.nova.set_service(str(svc["id"]), {"status": "enabled", "forced_down": False})
        log.info("nova-compute on %s enabled again and no longer forced down", host)

    # -- servers ----------------------------------------------------------------

    async def start_instance(self, instance: Instance, host: str, stopped: bool = False) -> None:
        """Evacuate it to `host`, or start it where it is if it is there and
        stopped; a start returns once Nova has it ACTIVE, as on libvirt (a
        stop returns once SHUTOFF)."""
        if await self._retrying(f"evacuate {instance.name}", self._evacuate, instance, host,
                                stopped):
            await self._retrying(f"start {instance.name}", self._started, instance)

    def _evacuate(self, instance: Instance, target: str, stopped: bool) -> bool:
        """True: it was started where it is (os-start), not evacuated."""
        server = self.nova.server(instance.id)
        where, task = host_of(server), task_of(server)
        moved = where == target if target != SCHEDULER else where not in ("", instance.host)
        if moved and not task and not stopped and server.get("status") == "SHUTOFF":
            self.nova.action(instance.id, {"os-start": None})  # started where it is
            return True
        if moved:  # a resumed job: Nova already moved it (or moves it) there
            log.info("server %s is already on %s (%s%s): not evacuated again", instance.name,
                     where, server.get("status"), f", {task}" if task else "")
            return False
        if task:
            raise TemporaryError(f"server {instance.name} is busy ({task}); waiting", 2.0)
        body: dict[str, Any] = {} if target == SCHEDULER else {"host": target}
        mv = MV_EVACUATE_STOPPED if stopped else MV_EVACUATE
        self.nova.action(instance.id, {"evacuate": body}, mv)
        log.info("server %s: evacuation from %s to %s accepted (microversion %s)",
                 instance.name, where or "?", target, mv)
        return False

    def _started(self, instance: Instance) -> None:
        server = self.nova.server(instance.id)
        status, task = server.get("status"), task_of(server)
        if status == "ACTIVE" and not task:
            log.info("server %s started on %s", instance.name, host_of(server))
            return
        if status == "ERROR":
            raise ValidationError("openstack", f"server {instance.name}: Nova put it in ERROR "
                                               "while starting it")
        raise TemporaryError(f"server {instance.name}: start accepted; waiting", 1.0)

    async def instance_state(self, instance: Instance, host: str) -> InstanceState:
        return await asyncio.to_thread(self._state, instance, host)

    def _state(self, instance: Instance, host: str) -> InstanceState:
        try:
            server = self.nova.server(instance.id)
        except NotFound:
            return InstanceState.UNKNOWN
        if task_of(server):
            return InstanceState.BUILDING
        if host == SCHEDULER:
            return self._scheduled(instance, server)
        moves = [m for m in self.nova.evacuations(instance.id) if m.get("dest_compute") == host]
        if moves and moves[0].get("status") in MIGRATION_FAILED:
            return InstanceState.ERROR  # e.g. NoValidHost: Nova refused that target
        if host_of(server) != host:
            return InstanceState.UNKNOWN
        state = _STATES.get(str(server.get("status")), InstanceState.UNKNOWN)
        if moves and moves[0].get("status") not in MIGRATION_DONE:
            return InstanceState.BUILDING
        return state

    def _scheduled(self, instance: Instance, server: dict[str, Any]) -> InstanceState:
        """A move left to Nova's scheduler: its newest evacuation failed
        (ERROR), is not done or has not left `instance.host` (vmha's record:
        the failed host) yet (BUILDING), else the server's state."""
        moves = self.nova.evacuations(instance.id)
        newest = moves[0].get("status") if moves else None
        if newest in MIGRATION_FAILED:
            return InstanceState.ERROR  # e.g. NoValidHost: no host for it
        if newest not in MIGRATION_DONE or host_of(server) in ("", instance.host):
            return InstanceState.BUILDING
        return _STATES.get(str(server.get("status")), InstanceState.UNKNOWN)

    async def placed_on(self, instance: Instance) -> str | None:
        """The host Nova records the server on (the Scheduling port)."""
        server = await self._retrying(f"locate {instance.name}", self.nova.server, instance.id)
        return host_of(server) or None

    async def rebuild_instance(self, instance: Instance, host: str) -> None:
        """Rebuild the server from its own image where it is (the actions API)."""
        await self._retrying(f"rebuild {instance.name}", self._rebuild, instance, host)

    def _rebuild(self, instance: Instance, host: str) -> None:
        server = self.nova.server(instance.id)
        image = server.get("image") or {}
        if host_of(server) != host:
            raise ValidationError("openstack", f"server {instance.name} is not on {host}")
        if not isinstance(image, dict) or not image.get("id"):
            raise ValidationError("openstack", f"server {instance.name} boots from a volume: "
                                               "rebuild it with Nova's own API")
        self.nova.action(instance.id, {"rebuild": {"imageRef": image["id"]}})

    async def stop_instance(self, instance: Instance, host: str) -> None:
        """Returns once Nova has it stopped (SHUTOFF, no task), as on libvirt:
        a `restart` starts it only after that."""
        await self._retrying(f"stop {instance.name}", self._stop, instance, host)

    def _stop(self, instance: Instance, host: str) -> None:
        server = self.nova.server(instance.id)
        if host_of(server) != host:
            log.info("server %s is not on %s (on %s): nothing to stop there", instance.name,
                     host, host_of(server) or "no host")
            return
        if task_of(server):
            raise TemporaryError(f"server {instance.name} is busy ({task_of(server)}); waiting",
                                 1.0)
        if server.get("status") == "ACTIVE":
            self.nova.action(instance.id, {"os-stop": None})
            raise TemporaryError(f"server {instance.name}: stop accepted; waiting", 1.0)

    async def reset_instance(self, instance: Instance, host: str) -> None:
        await self._retrying(f"reboot {instance.name}", self._reboot, instance, host)

    def _reboot(self, instance: Instance, host: str) -> None:
        server = self.nova.server(instance.id)
        if host_of(server) != host:
            log.info("server %s is not on %s (on %s): nothing to reboot there", instance.name,
                     host, host_of(server) or "no host")
            return
        self.nova.action(instance.id, {"reboot": {"type": "HARD"}})
