"""The lab's own small client for the lab cloud's APIs (standard library).

The lab sets the cloud up and creates servers with it; vmha's controller
never uses it (it has the openstacksdk adapter). `Session` gets a token
from Keystone with the admin's password and finds endpoints in the
catalog it returns; `call` sends JSON and returns the JSON answer, or
raises `ApiError` carrying the status and Nova's message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from vmha.lab.openstack import layout as L

NOVA_MICROVERSION = "2.95"


class ApiError(Exception):
    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {body[:300]}")
        self.status = status


def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
            timeout_s: float = 30.0) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else (body if isinstance(body, bytes)
                                      else json.dumps(body).encode())
    hdrs = {"Accept": "application/json", **(headers or {})}
    if body is not None and not isinstance(body, bytes):
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - lab bridge
            raw = resp.read()
            status, got = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raise ApiError(method, url, exc.code, exc.read().decode(errors="replace")) from exc
    return status, got, (json.loads(raw) if raw.strip() else None)


def wait_http(url: str, timeout_s: float) -> bool:
    """Until `url` answers at all (any HTTP status): the service listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            request("GET", url, timeout_s=2.0)
            return True
        except ApiError:
            return True
        except OSError:
            time.sleep(0.2)
    return False


class Session:
    """A scoped token and the catalog of one user."""

    def __init__(self, username: str, password: str, project: str) -> None:
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": username, "domain": {"name": L.DOMAIN}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": L.DOMAIN}}}}}
        _, headers, data = request("POST", L.url("keystone", "/v3/auth/tokens"), body)
        self.token = headers.get("X-Subject-Token") or headers.get("x-subject-token", "")
        self.catalog = data["token"].get("catalog", [])

    def endpoint(self, service_type: str) -> str:
        for svc in self.catalog:
            if svc["type"] == service_type:
                for ep in svc["endpoints"]:
                    if ep["interface"] == "public":
                        return str(ep["url"]).rstrip("/")
        raise ApiError("GET", service_type, 404, "not in the catalog")

    def call(self, method: str, service_type: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None, timeout_s: float = 30.0) -> Any:
        hdrs = {"X-Auth-Token": self.token, **(headers or {})}
        if service_type == "compute":
            hdrs.setdefault("OpenStack-API-Version", f"compute {NOVA_MICROVERSION}")
        url = self.endpoint(service_type) + path
        return request(method, url, body, hdrs, timeout_s)[2]


def admin_session(sec: L.Secrets) -> Session:
    return Session(L.ADMIN_USER, sec.admin, L.ADMIN_PROJECT)
