"""One call to a lab host's agent HTTP API (health, probes, domains).

Used by `vmha.lab.lab` (is the agent up, peer probes) and `vmha.lab.vms`
(which domains run where). Standard library only; raises OSError (URLError,
timeouts) and ValueError (a body that is not JSON) to the caller.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

AGENT_PORT = 8792


def agent_request(address: str, token: str, path: str, body: Any = None,
                  timeout_s: float = 2.0) -> Any:
    """GET `path` (POST with a JSON `body`) on the agent at `address`."""
    req = urllib.request.Request(
        f"http://{address}:{AGENT_PORT}{path}", method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - lab agent
        return json.loads(resp.read())
