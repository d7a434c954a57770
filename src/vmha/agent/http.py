"""The agent's tiny HTTP API (HTTP/1.1 on asyncio streams, one request per
connection), for the controller's confirmation step. Requests are read and
answers written by the one HTTP/1.1 parser (`vmha.adapters.httpwire`,
which holds the limits: 64 KiB of head, 256 KiB of body, 15 s to send a
request); a malformed request gets 400, a body over the limit 413 (on its
declared length, before it is read).

    GET  /v1/health                      -> the agent's view of itself
    GET  /v1/metrics                     -> Prometheus text (vmha.agent.metrics)
    POST /v1/probe {"targets": ["host2"], "timeout_s": 1.0}
                                         -> {"host2": true}
    GET  /v1/domains                     -> {"domains": [DomainView...]}
    GET  /v1/domains/{uuid}              -> DomainView ("absent" when unknown)
    PUT  /v1/domains/{uuid} {"xml": "<domain>...", "start": false}
                                         -> DomainView after define (+ start)
    POST /v1/domains/{uuid}/actions {"action": "reset"}
                                         -> DomainView after the action
    POST /v1/domains/{uuid}/exec {"command": ["/etc/init.d/app", "restart"],
                                  "timeout_s": 30}
                                         -> {"exitcode", "stdout", "stderr", ...}

Every request needs `Authorization: Bearer <api.token>`. Errors are
problem+json with a `detail` that names the field. Called by
`vmha.agent.main`; it reads the Agent and drives
the hypervisor (when one is configured).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vmha.adapters import httpwire
from vmha.agent import metrics as agent_metrics
from vmha.agent.domains import ACTIONS, canonical_uuid, parse_domain_xml
from vmha.agent.runtime import Agent
from vmha.errors import VmhaError

if TYPE_CHECKING:  # libvirt-python is optional: only with [hypervisor] uri
    from vmha.agent.guestagent import GuestAgent
    from vmha.agent.hypervisor import LibvirtHypervisor
    from vmha.agent.prober import Prober

log = logging.getLogger(__name__)

BODY_MAX = httpwire.AGENT_BODY_MAX  # domain XML
READ_TIMEOUT_S = 5.0  # the hypervisor's inventory for /v1/health
DOMAIN_TIMEOUT_S = 120.0  # a destroy waits for QEMU to die; a first start probes QEMU
EXEC_TIMEOUT_S, EXEC_TIMEOUT_MAX_S = 30.0, 110.0  # within DOMAIN_TIMEOUT_S
_REASONS = {status: httpwire.REASONS[status]
            for status in (200, 400, 401, 404, 405, 409, 413, 422, 500, 503)}


class HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AgentApi:
    def __init__(self, agent: Agent, token: str,
                 hypervisor: LibvirtHypervisor | None = None,
                 report_counts: Callable[[], Mapping[str, int]] | None = None,
                 guest_agent: GuestAgent | None = None, prober: Prober | None = None) -> None:
        self._agent = agent
        self._hv = hypervisor
        self._report_counts = report_counts  # the event reporter's counters, if any
        self._ga = guest_agent
        self._prober = prober
        self._auth = f"Bearer {token}".encode()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await httpwire.serve(self._handle, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await self._serve(reader)
        except HttpError as err:
            status, payload = err.status, {"title": _REASONS[err.status], "detail": err.detail}
        except VmhaError as err:
            status = err.status if err.status in _REASONS else 500
            payload = {"title": err.title, "detail": err.detail}
        except (TimeoutError, ConnectionError, httpwire.Closed, ValueError):
            writer.close()
            return
        if isinstance(payload, str):  # /v1/metrics: Prometheus text
            body, ctype = payload.encode(), "text/plain; version=0.0.4; charset=utf-8"
        else:
            body = json.dumps(payload).encode()
            ctype = "application/json" if status == 200 else "application/problem+json"
        try:
            writer.write(httpwire.encode_response(
                status, {"Content-Type": ctype, "Connection": "close"}, body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        method, path, body = await asyncio.wait_for(self._read_request(reader),
                                                    httpwire.AGENT_READ_TIMEOUT_S)
        if path == "/v1/health":
            if method != "GET":
                raise HttpError(405, f"{method} is not allowed on {path}; use GET")
            return 200, {**self._agent.health(), "hypervisor": await self._hv_health(),
                         "probes": None if self._prober is None else self._prober.health()}
        if path == "/v1/domains" or path.startswith("/v1/domains/"):
            try:
                return await asyncio.wait_for(self._domains(method, path, body),
                                              DOMAIN_TIMEOUT_S)
            except TimeoutError:
                raise HttpError(503, f"libvirt did not finish {method} {path} within "
                                     f"{DOMAIN_TIMEOUT_S:.0f} s; check the domain's state "
                                     "and retry") from None
        if path == "/v1/metrics":
            if method != "GET":
                raise HttpError(405, f"{method} is not allowed on {path}; use GET")
            return 200, self._metrics()
        if path == "/v1/probe":
            if method != "POST":
                raise HttpError(405, f"{method} is not allowed on {path}; use POST")
            return 200, await self._probe(body)
        raise HttpError(404, f"no such path {path!r}; try /v1/health, /v1/metrics, /v1/probe "
                             "or /v1/domains")

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        try:
            request = await httpwire.read_request(reader, BODY_MAX)
        except httpwire.TooLarge as exc:
            raise HttpError(413, str(exc)) from exc
        except httpwire.ProtocolError as exc:
            raise HttpError(400, f"malformed request: {exc}") from exc
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(),
                                   self._auth):
            raise HttpError(401, "missing or wrong bearer token")
        return request.method, request.path, request.body

    async def _probe(self, body: bytes) -> dict[str, bool]:
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise HttpError(400, f"body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HttpError(422, "body must be a JSON object")
        targets = data.get("targets")
        timeout_s = data.get("timeout_s", 1.0)
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise HttpError(422, "targets: must be a list of host names")
        if not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 10:
            raise HttpError(422, "timeout_s: must be a number in (0, 10]")
        peers = self._agent.cfg.peers
        unknown = [t for t in targets if t not in peers]
        if unknown:
            raise HttpError(422, f"targets: {unknown} are not peers of {self._agent.ident.host}")
        results = await asyncio.gather(*(self._agent.probe(t, timeout_s) for t in targets))
        return dict(zip(targets, results, strict=True))

    def _metrics(self) -> str:
        counts = dict(self._agent.metrics)
        if self._report_counts is not None:
            counts.update(self._report_counts())
        prober = self._prober
        return agent_metrics.render(self._agent.ident.host, counts, self._agent.health(),
                                    self._agent.watchdog_armed,
                                    None if prober is None else prober.counts,
                                    None if prober is None else prober.health())

    # -- domains (libvirt) ----------------------------------------------------
    async def _hv_health(self) -> dict[str, Any] | None:
        if self._hv is None:
            return None
        count: int | None = None
        if self._hv.connected:
            try:
                count = len(await asyncio.wait_for(self._hv.inventory(), READ_TIMEOUT_S))
            except (VmhaError, TimeoutError):
                count = None
        return {"uri": self._hv.uri, "connected": self._hv.connected, "domains": count}

    def _need_hv(self) -> LibvirtHypervisor:
        if self._hv is None:
            raise HttpError(404, f"no hypervisor configured on {self._agent.ident.host}: "
                                 "set [hypervisor] uri in the agent configuration")
        return self._hv

    async def _domains(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        hv = self._need_hv()
        parts = path.split("/")[3:]  # "", "v1", "domains", ...
        if not parts:
            if method != "GET":
                raise HttpError(405, f"{method} is not allowed on {path}; use GET")
            return 200, {"domains": [v.to_json() for v in await hv.inventory()]}
        uuid = canonical_uuid(parts[0])
        if len(parts) == 1 and method == "GET":
            return 200, (await hv.state(uuid)).to_json()
        if len(parts) == 1 and method == "PUT":
            return 200, await self._define(hv, uuid, _json_object(body))
        if parts[1:] == ["actions"] and method == "POST":
            action = _json_object(body).get("action")
            if action not in ACTIONS:
                raise HttpError(422, f"action: must be one of {', '.join(ACTIONS)}")
            return 200, (await hv.act(uuid, action)).to_json()
        if parts[1:] == ["exec"] and method == "POST":
            return 200, await self._exec(uuid, _json_object(body))
        if len(parts) == 1 or parts[1:] in (["actions"], ["exec"]):
            raise HttpError(405, f"{method} is not allowed on {path}")
        raise HttpError(404, f"no such path {path!r}; try /v1/domains/{{uuid}}/actions")

    async def _exec(self, uuid: str, data: dict[str, Any]) -> dict[str, Any]:
        """Run a command in the guest through its guest agent; the result."""
        command, timeout_s = data.get("command"), data.get("timeout_s", EXEC_TIMEOUT_S)
        if not isinstance(command, list) or not command or not all(
                isinstance(a, str) and a for a in command):
            raise HttpError(422, "command: must be a non-empty list of arguments "
                                 '(["/etc/init.d/app", "restart"])')
        if not isinstance(timeout_s, int | float) or not 0 < timeout_s <= EXEC_TIMEOUT_MAX_S:
            raise HttpError(422, f"timeout_s: must be a number in (0, {EXEC_TIMEOUT_MAX_S}]")
        assert self._ga is not None  # present whenever a hypervisor is
        result = await self._ga.run(uuid, command, float(timeout_s))
        log.info("domain %s: ran %s in the guest: %s", uuid, command[0], result.describe())
        return result.to_json()

    @staticmethod
    async def _define(hv: LibvirtHypervisor, uuid: str, data: dict[str, Any]) -> Any:
        xml, start = data.get("xml"), data.get("start", False)
        if not isinstance(xml, str) or not xml.strip():
            raise HttpError(422, "xml: must be the domain XML as a string")
        if not isinstance(start, bool):
            raise HttpError(422, "start: must be true or false")
        if parse_domain_xml(xml) != uuid:
            raise HttpError(422, f"xml: its <uuid> differs from {uuid} in the path")
        view = await hv.define(xml)
        if start:
            view = await hv.start(uuid)
        return view.to_json()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise HttpError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HttpError(422, "body must be a JSON object")
    return data
