"""PeerProber over the agents' HTTP API: ask host `via` whether it reaches `target`.

The controller's confirmation round calls `probe(via, target, timeout_s)`;
this adapter looks up `via`'s registered agent (API URL and token, from the
store) and posts `{"targets": [target], "timeout_s": …}` to its
`/v1/probe`, giving the agent 60 % of `timeout_s` so that its answer
arrives within `timeout_s`. The verdict is `True`/`False` from the agent, or `None` when
`via` itself cannot be asked (not registered, unreachable, error answer):
such a peer's opinion does not count either way.

Called rarely (only for suspect hosts), so the store lookup per call is fine.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from vmha.domain.errors import NotFound, VmhaError
from vmha.ports import Store

log = logging.getLogger(__name__)

# `timeout_s` bounds the whole call (the engine cancels it after that), so
# the agent gets this share of it to probe, the rest is the HTTP round trip.
AGENT_SHARE = 0.6


class HttpPeerProber:
    def __init__(self, store: Store, client: httpx.AsyncClient | None = None) -> None:
        self._store = store
        self._client = client or httpx.AsyncClient()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def probe(self, via: str, target: str, timeout_s: float) -> bool | None:
        try:
            agent = await asyncio.to_thread(self._store.get_agent, via)
        except NotFound:
            log.info("peer probe: %s has no registered agent; its view does not count", via)
            return None
        except VmhaError as exc:
            log.warning("peer probe: cannot look up %s's agent: %s", via, exc.detail)
            return None
        if not agent.api_url:
            return None
        try:
            response = await self._client.post(
                f"{agent.api_url.rstrip('/')}/v1/probe",
                json={"targets": [target], "timeout_s": round(timeout_s * AGENT_SHARE, 3)},
                headers={"Authorization": f"Bearer {agent.api_token}"},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            log.info("peer probe: %s did not answer (%s)", via, type(exc).__name__)
            return None
        if response.status_code != 200:
            log.warning("peer probe: %s answered %s: %s", via, response.status_code,
                        response.text[:200])
            return None
        verdict = response.json().get(target)
        return verdict if isinstance(verdict, bool) else None
