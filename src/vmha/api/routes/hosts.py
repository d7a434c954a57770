"""`/v1/hosts`: hypervisors (key: name).

Admins create, change and delete hosts' configuration; a host's `state` is
never written here: `POST .../maintenance` and `.../actions` (admin,
operator), `GET .../power-status`, `POST .../fence` and `.../fence-ack`
(admin, operator) are commands for the running engine, sent through the
controller's inbox (503 when this process runs none); the engine moves the
state and stores it with its event (outbox). `PUT|DELETE .../bmc` (admin)
stores the host's BMC with its password encrypted (write-only), `GET
.../bmc` (admin, operator) shows it with the password as `***`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from fastapi import APIRouter, Depends, Query, Response

from vmha.adapters.fencing.secrets import NO_KEY
from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context, field_prefix, references
from vmha.api.routes.common import Paging, list_errors, location, paging_for, rewrite
from vmha.api.schemas import (
    BmcIn,
    BmcOut,
    FenceAckOut,
    FenceAckRequest,
    FenceOut,
    FenceRequest,
    HostAction,
    HostActionOut,
    HostCreate,
    HostOut,
    HostUpdate,
    MaintenanceRequest,
    PageOut,
    PowerStatusOut,
)
from vmha.domain.bmc import BmcRecord, bmc_address_problems, ipmi_password_problem
from vmha.domain.commands import FenceAck, FenceHost, ReadPower, SetMaintenance, SetScheduling
from vmha.domain.errors import Conflict, ValidationError
from vmha.domain.model import Host, HostState, Job

log = logging.getLogger("vmha.api.hosts")
router = APIRouter(prefix="/v1/hosts", tags=["hosts"])
READ = Depends(authorize(Permission.HOSTS_READ))
WRITE = Depends(authorize(Permission.HOSTS_WRITE))
MAINTAIN = Depends(authorize(Permission.HOSTS_MAINTENANCE))


@router.get("", response_model=PageOut[HostOut])
def list_hosts(
    page: Paging = Depends(paging_for("name", "state", "segment")),
    segment: str | None = Query(None),
    state: HostState | None = Query(None),
    ctx: AppContext = Depends(context),
    _: Principal = READ,
) -> Response:
    # Serialized here as plain JSON: a model per host, dumped to a dict,
    # validated again against the response model by FastAPI and serialized
    # cost twice the store read of a 1,000-host page, in a thread sharing the
    # GIL with the engine (the response model still documents the page).
    filters = {"segment": segment, "state": None if state is None else state.value}
    with list_errors():
        result = ctx.host_page(page.query(filters))
    items = [HostOut.plain(h, ctx.liveness_of(h.name)) for h in result.items]
    body = json.dumps({"items": items, "next_marker": result.next_marker},
                      ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode(), media_type="application/json")


@router.post("", status_code=201, response_model=HostOut)
def create_host(
    body: HostCreate, response: Response, ctx: AppContext = Depends(context),
    _: Principal = WRITE,
) -> HostOut:
    with field_prefix("body"):
        host = body.to_domain()
    with references(segment="segment"):
        created = ctx.store.create_host(replace(host, state_since=ctx.clock.now()))
    ctx.hosts_written(created.name)
    response.headers["Location"] = location("hosts", created.name)
    return HostOut.of(created)


@router.get("/{name}", response_model=HostOut)
def get_host(name: str, ctx: AppContext = Depends(context), _: Principal = READ) -> HostOut:
    return HostOut.of(ctx.host(name), ctx.liveness_of(name))


@router.patch("/{name}", response_model=HostOut)
def update_host(
    name: str, body: HostUpdate, ctx: AppContext = Depends(context), _: Principal = WRITE
) -> HostOut:
    def change(current: Host) -> Host:
        with field_prefix("body"):
            return body.apply(current)

    with references(segment="segment"):
        updated = rewrite(lambda: ctx.store.get_host(name), change, ctx.store.update_host)
    ctx.hosts_written(name)
    return HostOut.of(updated, ctx.liveness_of(name))


@router.delete("/{name}", status_code=204)
def delete_host(name: str, ctx: AppContext = Depends(context), _: Principal = WRITE) -> Response:
    ctx.store.delete_host(name)
    ctx.hosts_written(name)
    return Response(status_code=204)


@router.post("/{name}/maintenance", response_model=HostOut)
async def set_maintenance(
    name: str,
    body: MaintenanceRequest,
    ctx: AppContext = Depends(context),
    who: Principal = MAINTAIN,
) -> HostOut:
    """Enter (`enabled: true`) or leave maintenance. Repeating the current
    setting changes nothing and records no event."""
    host = await ctx.ask(SetMaintenance(name, body.enabled, body.reason, who.name or who.role))
    return HostOut.of(host, ctx.liveness_of(name))


# -- operator fencing ----------------------------------------------------------

FENCE = Depends(authorize(Permission.HOSTS_FENCE))


@router.get("/{name}/power-status", response_model=PowerStatusOut)
async def power_status(
    name: str, ctx: AppContext = Depends(context), _: Principal = FENCE
) -> PowerStatusOut:
    """Read the host's power through every configured method (BMC)."""
    return PowerStatusOut(host=name, methods=await ctx.ask(ReadPower(name)))


@router.post("/{name}/fence-ack", status_code=202, response_model=FenceAckOut)
async def fence_ack(
    name: str, body: FenceAckRequest | None = None, ctx: AppContext = Depends(context),
    who: Principal = FENCE,
) -> FenceAckOut:
    """An operator confirms the host is powered off (the `manual` fence level).

    Only a host that is in trouble can be acknowledged, and not while its
    heartbeats are current or a peer still reaches it (409) unless `force`;
    the acknowledgement is recorded on the host's recovery job and in its
    `host.fence_acked` event, with who gave it and whether it was forced."""
    force = body.force if body is not None else False
    by = await _fence_ack(ctx, name, who, force)
    return FenceAckOut(host=name, acknowledged_by=by, forced=force)


async def _fence_ack(ctx: AppContext, name: str, who: Principal, force: bool) -> str:
    by = who.name or who.role
    await ctx.ask(FenceAck(name, by, force))
    return by


@router.post("/{name}/fence", status_code=202, response_model=FenceOut)
async def fence(
    name: str, body: FenceRequest | None = None, ctx: AppContext = Depends(context),
    who: Principal = FENCE,
) -> FenceOut:
    """Power the host off through its power fence levels (or only `method`).

    Runs as the host's recovery job (`job`): every attempt is a step of it
    (method, start, end, outcome); `host.fenced` once a power-status read
    says off, then its instances are recovered; `host.fence_failed` if no
    level confirms."""
    job = await _fence(ctx, name, who, body.method if body is not None else None)
    return FenceOut(host=name, job=job.id, requested_by=who.name or who.role,
                    levels=job.data.to_storage().get("levels", []))


async def _fence(ctx: AppContext, name: str, who: Principal, method: str | None) -> Job:
    job: Job = await ctx.ask(FenceHost(name, who.name or who.role, method))
    return job


@router.post("/{name}/actions", status_code=202, response_model=HostActionOut)
async def host_action(
    name: str, body: HostAction, ctx: AppContext = Depends(context),
    who: Principal = Depends(authorize(Permission.HOSTS_READ)),
) -> HostActionOut:
    """The general form of the operator's host actions: `fence`, `fence-ack`
    (permission hosts:fence), `enable` / `disable` scheduling
    (hosts:maintenance)."""
    by = who.name or who.role
    if body.action == "fence":
        authorize(Permission.HOSTS_FENCE)(who)
        job = await _fence(ctx, name, who, body.method)
        return HostActionOut(host=name, action=body.action, by=by, job=job.id)
    if body.action == "fence-ack":
        authorize(Permission.HOSTS_FENCE)(who)
        await _fence_ack(ctx, name, who, body.force)
        return HostActionOut(host=name, action=body.action, by=by, forced=body.force)
    authorize(Permission.HOSTS_MAINTENANCE)(who)
    await ctx.ask(SetScheduling(name, body.action == "enable", by, body.reason))
    return HostActionOut(host=name, action=body.action, by=by)


# -- BMC credentials -----------------------------------------------------------


@router.put("/{name}/bmc", response_model=BmcOut)
def put_bmc(name: str, body: BmcIn, ctx: AppContext = Depends(context),
            _: Principal = WRITE) -> BmcOut:
    """Store the host's BMC; the password is encrypted with the service's
    key (409 when none is configured) and never shown again."""
    password = body.password.get_secret_value()
    problem = ipmi_password_problem(password, body.ipmi_address, body.fence_agent)
    if problem is not None:
        raise ValidationError("body.password", problem)
    with field_prefix("body"):
        bmc_address_problems(body.ipmi_address, body.redfish_url)  # before any key is used
    if ctx.bmc_box is None:
        log.error("PUT /v1/hosts/%s/bmc refused: %s", name, NO_KEY)
        raise Conflict(NO_KEY)
    secret = ctx.bmc_box.encrypt(password)
    with field_prefix("body"):
        record = BmcRecord(
            host=name, username=body.username, password_secret=secret,
            ipmi_address=body.ipmi_address, ipmi_port=body.ipmi_port,
            redfish_url=body.redfish_url, redfish_system=body.redfish_system,
            fence_agent=body.fence_agent, fence_agent_options=body.fence_agent_options,
            updated_at=ctx.clock.now())
    saved = ctx.store.save_bmc(record)
    log.info("host %s: BMC stored (user %s, ipmi %r, redfish %r, agent %r)", name,
             saved.username, saved.ipmi_address, saved.redfish_url, saved.fence_agent)
    return BmcOut.of(saved)


@router.get("/{name}/bmc", response_model=BmcOut)
def get_bmc(name: str, ctx: AppContext = Depends(context), _: Principal = FENCE) -> BmcOut:
    """The host's stored BMC, password shown as ***."""
    ctx.store.get_host(name)
    return BmcOut.of(ctx.store.get_bmc(name))


@router.delete("/{name}/bmc", status_code=204)
def delete_bmc(name: str, ctx: AppContext = Depends(context), _: Principal = WRITE) -> Response:
    ctx.store.delete_bmc(name)
    return Response(status_code=204)
