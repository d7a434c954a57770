"""HttpPeerProber: the agent's answer, and every way of not getting one."""

from __future__ import annotations

import asyncio
import json

import httpx

from vmha.adapters.peer.http import HttpPeerProber
from vmha.adapters.store.fake import FakeStore
from vmha.domain.agents import AgentRecord
from vmha.domain.model import Host, Segment


def store_with_agent(api_url: str = "http://198.18.0.11:8792") -> FakeStore:
    store = FakeStore()
    store.create_segment(Segment("lab"))
    for name in ("host1", "host2"):
        store.create_host(Host(name, "lab"))
    store.save_agent(AgentRecord("host1", "s" * 32, api_url, "agent-token"))
    return store


def run(prober: HttpPeerProber, via: str, target: str) -> bool | None:
    return asyncio.run(prober.probe(via, target, 1.0))


def test_the_agents_verdict_is_returned() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(200, json={t: False for t in body["targets"]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    assert run(HttpPeerProber(store_with_agent(), client), "host1", "host2") is False
    (request,) = seen
    assert str(request.url) == "http://198.18.0.11:8792/v1/probe"
    assert request.headers["authorization"] == "Bearer agent-token"
    assert json.loads(request.content) == {"targets": ["host2"], "timeout_s": 0.6}


def test_no_verdict_when_the_peer_cannot_be_asked() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def error(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "bad token"})

    store = store_with_agent()
    for handler in (refuse, error):
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        assert run(HttpPeerProber(store, client), "host1", "host2") is None
    # host2 never registered an agent: nobody to ask
    client = httpx.AsyncClient(transport=httpx.MockTransport(error))
    assert run(HttpPeerProber(store, client), "host2", "host1") is None
