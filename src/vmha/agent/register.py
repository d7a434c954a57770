"""Client side of agent registration with the controller's REST API.

    POST {controller.url}/v1/agents/register
    Authorization: Bearer {controller.token}
    {"host": "host1", "segment": "lab", "address": "198.18.0.11",
     "capacity": {"vcpus": 8, "ram_mb": 16384, "disk_gb": 200},
     "version": "0.1.0", "boot_id": "<16 hex>",
     "api": {"url": "http://198.18.0.11:8792", "token": "<agent API token>"}}
    -> 200/201 {"secret": "<per-host heartbeat secret>",
                "segment_secret": "<optional; enables peer probes>"}

Idempotent on the controller side: registering the same host again returns
the same secret. Used only when no secret is configured. One request on
the agent's own HTTP/1.1 client (`vmha.agent.report.Client`, the one
parser of `vmha.adapters.httpwire`), to keep the agent small.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vmha.agent.report import Client, ControllerDown
from vmha.errors import TemporaryError, Unauthenticated, ValidationError


@dataclass(frozen=True)
class Registration:
    secret: bytes
    segment_secret: bytes | None


async def _post(url: str, token: str | None, body: dict[str, Any], timeout_s: float) -> Any:
    client = Client(url, token, timeout_s)
    try:
        answer = await client.request("POST", "", body)
    except ControllerDown as exc:
        raise TemporaryError(f"cannot reach the controller at {url}: {exc}", 5.0) from exc
    finally:
        client.close()
    if answer.status in (401, 403):
        raise Unauthenticated(f"controller refused registration at {url}: {answer.status}")
    if not 200 <= answer.status < 300:
        raise TemporaryError(f"registration at {url} failed: HTTP {answer.status}", 5.0)
    try:
        return json.loads(answer.body or b"{}")
    except ValueError as exc:
        raise TemporaryError(f"registration at {url} answered no JSON: {exc}", 5.0) from exc


async def register(
    api_url: str, token: str | None, body: dict[str, Any], timeout_s: float = 5.0
) -> Registration:
    """Register this host; raise TemporaryError to retry, Unauthenticated to stop."""
    if not api_url.startswith(("http://", "https://")):
        raise ValidationError("controller.url", f"{api_url!r} is not an http(s) URL")
    url = api_url.rstrip("/") + "/v1/agents/register"
    data = await _post(url, token, body, timeout_s)
    secret = data.get("secret") if isinstance(data, dict) else None
    if not isinstance(secret, str) or not secret:
        raise TemporaryError(f"registration at {url} returned no secret", 5.0)
    seg = data.get("segment_secret")
    return Registration(secret.encode(), seg.encode() if isinstance(seg, str) and seg else None)
