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
the same secret. Used only when no secret is configured. Standard library
HTTP (urllib) in a worker thread, to keep the agent small.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from vmha.errors import TemporaryError, Unauthenticated, ValidationError


@dataclass(frozen=True)
class Registration:
    secret: bytes
    segment_secret: bytes | None


def _post(url: str, token: str | None, body: dict[str, Any], timeout_s: float) -> Any:
    req = urllib.request.Request(  # noqa: S310 - URL scheme checked by the caller
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise Unauthenticated(f"controller refused registration at {url}: {exc.code}") from exc
        raise TemporaryError(f"registration at {url} failed: HTTP {exc.code}", 5.0) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TemporaryError(f"cannot reach the controller at {url}: {exc}", 5.0) from exc


async def register(
    api_url: str, token: str | None, body: dict[str, Any], timeout_s: float = 5.0
) -> Registration:
    """Register this host; raise TemporaryError to retry, Unauthenticated to stop."""
    if not api_url.startswith(("http://", "https://")):
        raise ValidationError("controller.url", f"{api_url!r} is not an http(s) URL")
    url = api_url.rstrip("/") + "/v1/agents/register"
    data = await asyncio.to_thread(_post, url, token, body, timeout_s)
    secret = data.get("secret") if isinstance(data, dict) else None
    if not isinstance(secret, str) or not secret:
        raise TemporaryError(f"registration at {url} returned no secret", 5.0)
    seg = data.get("segment_secret")
    return Registration(secret.encode(), seg.encode() if isinstance(seg, str) and seg else None)
