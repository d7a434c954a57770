"""`POST /v1/agents/register`: a host agent introduces itself.

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
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import (
    AgentInbox,
    AppContext,
    DomainReport,
    context,
    field_prefix,
    references,
)
from vmha.api.schemas import CapacityModel, _In, _Out
from vmha.domain.agents import AgentRecord
from vmha.domain.errors import NotFound, TemporaryError
from vmha.domain.model import Host

router = APIRouter(prefix="/v1/agents", tags=["agents"])
REGISTER = Depends(authorize(Permission.AGENTS_REGISTER))


class AgentApi(_In):
    url: str = Field(default="", max_length=255, description="the agent's HTTP API")
    token: str = Field(default="", max_length=255, description="bearer token for it")


class AgentRegistration(_In):
    host: str = Field(max_length=64)
    segment: str = Field(max_length=64)
    address: str = Field(default="", max_length=255)
    capacity: CapacityModel = CapacityModel()
    version: str = Field(default="", max_length=64)
    boot_id: str = Field(default="", max_length=64)
    api: AgentApi = AgentApi()


class AgentRegistered(_Out):
    host: str
    secret: str = Field(description="HMAC key of the host's heartbeats")
    created_host: bool


@router.post("/register", response_model=AgentRegistered)
def register(
    body: AgentRegistration, response: Response, ctx: AppContext = Depends(context),
    _: Principal = REGISTER,
) -> AgentRegistered:
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
    response.status_code = 201 if created else 200
    return AgentRegistered(host=body.host, secret=secret, created_host=created)


def _ensure_host(ctx: AppContext, body: AgentRegistration) -> bool:
    """Create the host, or refresh what the agent knows better; True if new."""
    capacity = body.capacity.to_domain()
    try:
        current = ctx.store.get_host(body.host)
    except NotFound:
        with field_prefix("body"):
            host = Host(name=body.host, segment=body.segment, address=body.address,
                        capacity=capacity, state_since=ctx.clock.now())
        with references(segment="segment"):
            ctx.store.create_host(host)
        return True
    if (current.address, current.capacity) != (body.address, capacity):
        ctx.store.update_host(replace(current, address=body.address, capacity=capacity))
    return False


# -- what agents report about their domains -------------------------------------

REPORT = Depends(authorize(Permission.AGENTS_REPORT))
EVENTS_MAX = 1000
DOMAINS_MAX = 10000


class DomainEventIn(_In):
    instance: str = Field(max_length=64, description="the domain's libvirt UUID")
    name: str = Field(default="", max_length=255)
    kind: str = Field(max_length=32, description="started, stopped, crashed, watchdog, ...")
    detail: str = Field(default="", max_length=1024)
    requested: bool = Field(default=False, description="asked through the agent's API")
    time: float = 0.0


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


def _inbox(ctx: AppContext) -> AgentInbox:
    if ctx.inbox is None:
        raise TemporaryError("the controller's engine is not running in this process", 5.0)
    return ctx.inbox


@router.post("/{host}/events", status_code=202, response_model=DomainEventsAccepted)
async def domain_events(
    host: str, body: DomainEventsIn, ctx: AppContext = Depends(context), _: Principal = REPORT,
) -> DomainEventsAccepted:
    """Domain events of `host`'s hypervisor, in the order they happened."""
    inbox = _inbox(ctx)
    await asyncio.to_thread(ctx.store.get_host, host)  # 404 for an unknown host
    reports = [DomainReport(e.instance, e.name, e.kind, e.detail, e.requested, e.time)
               for e in body.events]
    known = await inbox.domain_events(host, reports)
    return DomainEventsAccepted(accepted=len(reports), known=known)


@router.put("/{host}/inventory", status_code=200, response_model=DomainEventsAccepted)
async def domain_inventory(
    host: str, body: InventoryIn, ctx: AppContext = Depends(context), _: Principal = REPORT,
) -> DomainEventsAccepted:
    """Every domain `host`'s hypervisor has, with its state."""
    inbox = _inbox(ctx)
    await asyncio.to_thread(ctx.store.get_host, host)
    await inbox.domain_inventory(host, [d.model_dump() for d in body.domains])
    return DomainEventsAccepted(accepted=len(body.domains), known=len(body.domains))
