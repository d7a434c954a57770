"""`POST /v1/agents/register`: a host agent introduces itself.
`POST /v1/agents/register-batch`: up to 1,000 at once, in one store
transaction (a fleet being set up, a load generator: 10,000 in seconds),
with the same rules as one by one.

Called by `vmha agent` at start when it has no heartbeat secret yet (see
vmha.agent.register). Idempotent: a host that registers again keeps its
secret, so a restarted agent and the controller stay in agreement. The
host is created in the named segment when it does not exist yet (its
address and capacity are updated from the agent otherwise: the agent reads
them from the hypervisor). The agent's API URL and token are kept so the
controller can ask it to probe its peers.

Needs the `agents:register` permission (roles `admin` and `agent`). Every
holder of an agent token can read any host's secret by registering as
that host: give agent tokens only to hypervisors.

Agents also report their domains' events and inventory here, and fetch
the probe document of their host (`GET /v1/agents/{host}/probes`: what to
probe on each instance recorded there, from its effective policy).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import replace

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context, field_prefix, references
from vmha.api.routes.common import rewrite
from vmha.api.routes.instances import resolve_policy
from vmha.api.schemas import NAME, CapacityModel, _In, _Out
from vmha.domain.agents import AgentRecord, Registration
from vmha.domain.commands import DomainEvents, DomainReport, Inventory
from vmha.domain.errors import NotFound, ValidationError
from vmha.domain.model import Host, check_name
from vmha.domain.policy import DEFAULT_POLICY, agent_watch
from vmha.ports import list_all

router = APIRouter(prefix="/v1/agents", tags=["agents"])
REGISTER = Depends(authorize(Permission.AGENTS_REGISTER))


class AgentApi(_In):
    url: str = Field(default="", max_length=255, description="the agent's HTTP API",
                     json_schema_extra={"pattern": r"^(https?://[\s\S]*)?$"})
    token: str = Field(default="", max_length=255, description="bearer token for it")


class AgentRegistration(_In):
    host: str = Field(**NAME)
    segment: str = Field(**NAME)
    address: str = Field(default="", max_length=255)
    capacity: CapacityModel = CapacityModel()
    version: str = Field(default="", max_length=64)
    boot_id: str = Field(default="", max_length=64)
    api: AgentApi = AgentApi()


class AgentRegistered(_Out):
    host: str
    secret: str = Field(description="HMAC key of the host's heartbeats")
    created_host: bool


@router.post("/register", response_model=AgentRegistered,
             responses={201: {"model": AgentRegistered,
                              "description": "registered; the host was created"}})
def register(
    body: AgentRegistration, response: Response, ctx: AppContext = Depends(context),
    _: Principal = REGISTER,
) -> AgentRegistered:
    with field_prefix("body"):
        check_name("segment", body.segment)  # also when the host exists already
    created = _ensure_host(ctx, body)
    try:
        secret = ctx.store.get_agent(body.host).secret
    except NotFound:
        secret = secrets.token_hex(32)
    with field_prefix("body"):
        record = AgentRecord(
            host=body.host, secret=secret, api_url=body.api.url, api_token=body.api.token,
            version=body.version, boot_id=body.boot_id, registered_at=ctx.clock.now(),
        )
    ctx.store.save_agent(record)
    ctx.hosts_written(body.host)
    if ctx.on_registered is not None:
        ctx.on_registered([(body.host, secret)])
    response.status_code = 201 if created else 200
    return AgentRegistered(host=body.host, secret=secret, created_host=created)


BATCH_MAX = 1000


class AgentBatch(_In):
    agents: list[AgentRegistration] = Field(max_length=BATCH_MAX)


class AgentsRegistered(_Out):
    agents: list[AgentRegistered] = Field(description="in the order of the request")


@router.post("/register-batch", response_model=AgentsRegistered)
def register_batch(
    body: AgentBatch, ctx: AppContext = Depends(context), _: Principal = REGISTER,
) -> AgentsRegistered:
    """Register many agents in one transaction: hosts created or refreshed
    and secrets kept as by `/register`; an unknown segment refuses the
    whole batch (422 naming it), nothing written."""
    now = ctx.clock.now()
    regs = []
    for i, item in enumerate(body.agents):
        with field_prefix(f"body.agents.{i}"):
            regs.append(Registration(
                Host(name=item.host, segment=item.segment, address=item.address,
                     capacity=item.capacity.to_domain(), state_since=now),
                AgentRecord(host=item.host, secret=secrets.token_hex(32), api_url=item.api.url,
                            api_token=item.api.token, version=item.version,
                            boot_id=item.boot_id, registered_at=now)))
    try:
        done = ctx.store.register_agents(regs)
    except NotFound as exc:  # name the first item that named it
        if exc.kind != "segment":
            raise
        at = next((i for i, item in enumerate(body.agents) if item.segment == exc.key), 0)
        raise ValidationError(f"body.agents.{at}.segment",
                              f"{exc.detail}; create it first or name another") from exc
    ctx.hosts_written(*(r.agent.host for r in done))
    if ctx.on_registered is not None:
        ctx.on_registered([(r.agent.host, r.agent.secret) for r in done])
    return AgentsRegistered(agents=[
        AgentRegistered(host=r.agent.host, secret=r.agent.secret, created_host=r.created_host)
        for r in done])


def _ensure_host(ctx: AppContext, body: AgentRegistration) -> bool:
    """Create the host, or refresh what the agent knows better; True if new."""
    capacity = body.capacity.to_domain()
    def learn(host: Host) -> Host | None:
        if (host.address, host.capacity) == (body.address, capacity):
            return None
        return replace(host, address=body.address, capacity=capacity)

    try:
        rewrite(lambda: ctx.store.get_host(body.host), learn, ctx.store.update_host)
    except NotFound:
        with field_prefix("body"):
            host = Host(name=body.host, segment=body.segment, address=body.address,
                        capacity=capacity, state_since=ctx.clock.now())
        with references(segment="segment"):
            ctx.store.create_host(host)
        return True
    return False


# -- what agents report about their domains -------------------------------------

REPORT = Depends(authorize(Permission.AGENTS_REPORT))
EVENTS_MAX = 1000
DOMAINS_MAX = 10000


class DomainEventIn(_In):
    instance: str = Field(max_length=64, description="the domain's libvirt UUID")
    name: str = Field(default="", max_length=255)
    kind: str = Field(max_length=32, description="started, stopped, crashed, watchdog, ..., "
                      "app_failed, app_recovered, guest_unresponsive, guest_responsive")
    detail: str = Field(default="", max_length=1024)
    requested: bool = Field(default=False, description="asked through the agent's API")
    time: float = 0.0
    probe: str = Field(default="", max_length=1100, description="app_* and guest_*: the check")
    count: int = Field(default=0, ge=0, le=2**31 - 1,
                       description="its failures (or successes) in a row")


class DomainEventsIn(_In):
    boot_id: str = Field(default="", max_length=64)
    events: list[DomainEventIn] = Field(max_length=EVENTS_MAX)


class DomainEventsAccepted(_Out):
    accepted: int = Field(description="events received")
    known: int = Field(description="events about instances vmha knows")


class DomainIn(_In):
    uuid: str = Field(max_length=64)
    name: str = Field(default="", max_length=255)
    state: str = Field(max_length=32)
    reason: str = Field(default="", max_length=255)


class InventoryIn(_In):
    boot_id: str = Field(default="", max_length=64)
    time: float = 0.0
    domains: list[DomainIn] = Field(max_length=DOMAINS_MAX)


@router.post("/{host}/events", status_code=202, response_model=DomainEventsAccepted)
async def domain_events(
    host: str, body: DomainEventsIn, ctx: AppContext = Depends(context), _: Principal = REPORT,
) -> DomainEventsAccepted:
    """Domain events of `host`'s hypervisor, in the order they happened."""
    await asyncio.to_thread(ctx.store.get_host, host)  # 404 for an unknown host
    reports = tuple(DomainReport(e.instance, e.name, e.kind, e.detail, e.requested, e.time,
                                 e.probe, e.count) for e in body.events)
    known = await ctx.ask(DomainEvents(host, reports))
    return DomainEventsAccepted(accepted=len(reports), known=known)


@router.put("/{host}/inventory", status_code=200, response_model=DomainEventsAccepted)
async def domain_inventory(
    host: str, body: InventoryIn, ctx: AppContext = Depends(context), _: Principal = REPORT,
) -> DomainEventsAccepted:
    """Every domain `host`'s hypervisor has, with its state."""
    await asyncio.to_thread(ctx.store.get_host, host)
    await ctx.ask(Inventory(host, tuple(d.model_dump() for d in body.domains)))
    return DomainEventsAccepted(accepted=len(body.domains), known=len(body.domains))


# -- what agents check on their instances ---------------------------------------


@router.get("/{host}/probes", responses={200: {"description": "the probe document"},
                                         304: {"description": "unchanged (If-None-Match)"}})
def probe_document(host: str, request: Request, ctx: AppContext = Depends(context),
                   _: Principal = REPORT) -> Response:
    """The application probes and guest-agent pings of every instance
    recorded on `host` (see docs/agent.md "Probes"), with an ETag: an agent
    that sends it back in If-None-Match gets 304 while nothing changed."""
    ctx.store.get_host(host)  # 404 for an unknown host
    entries = []
    for inst in sorted(list_all(ctx.store.list_instances, {"host": host}), key=lambda i: i.id):
        try:
            policy = resolve_policy(ctx.store, inst)[2]
        except NotFound:  # a named policy deleted since: what the engine applies too
            policy = DEFAULT_POLICY
        watch = agent_watch(policy, inst.spec.ip if inst.spec is not None else "")
        if watch is not None:
            entries.append({"domain": domain_uuid(inst.id), "instance": inst.id,
                            "name": inst.name, **watch})
    body = json.dumps({"instances": entries}, sort_keys=True, separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})
