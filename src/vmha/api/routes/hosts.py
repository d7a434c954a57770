"""`/v1/hosts`: hypervisors (key: name).

Admins create, change and delete hosts; the host's `state` is never
written here except through the state machine: `POST .../maintenance`
(admin, operator) moves it with `transition_host` and stores the host and
its `host.maintenance_on|off` event in one `update_host` call (outbox).
`GET .../power-status` and `POST .../fence-ack` (admin, operator) go to
the running engine (503 when this process runs none).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from fastapi import APIRouter, Depends, Query, Response

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, HostOperations, context, field_prefix, references
from vmha.api.routes.common import Paging, list_errors, location, page_of, paging
from vmha.api.schemas import (
    FenceAckOut,
    HostCreate,
    HostOut,
    HostUpdate,
    MaintenanceRequest,
    PageOut,
    PowerStatusOut,
)
from vmha.domain.errors import Conflict, TemporaryError
from vmha.domain.model import Host, HostState, transition_host

router = APIRouter(prefix="/v1/hosts", tags=["hosts"])
READ = Depends(authorize(Permission.HOSTS_READ))
WRITE = Depends(authorize(Permission.HOSTS_WRITE))
MAINTAIN = Depends(authorize(Permission.HOSTS_MAINTENANCE))


@router.get("", response_model=PageOut[HostOut])
def list_hosts(
    page: Paging = Depends(paging),
    segment: str | None = Query(None),
    state: HostState | None = Query(None),
    ctx: AppContext = Depends(context),
    _: Principal = READ,
) -> dict[str, object]:
    filters = {"segment": segment, "state": None if state is None else state.value}
    with list_errors():
        result = ctx.store.list_hosts(page.query(filters))
    return page_of(result, lambda h: HostOut.of(h, ctx.liveness_of(h.name)))


@router.post("", status_code=201, response_model=HostOut)
def create_host(
    body: HostCreate, response: Response, ctx: AppContext = Depends(context),
    _: Principal = WRITE,
) -> HostOut:
    with field_prefix("body"):
        host = body.to_domain()
    with references(segment="segment"):
        created = ctx.store.create_host(replace(host, state_since=ctx.clock.now()))
    response.headers["Location"] = location("hosts", created.name)
    return HostOut.of(created)


@router.get("/{name}", response_model=HostOut)
def get_host(name: str, ctx: AppContext = Depends(context), _: Principal = READ) -> HostOut:
    return HostOut.of(ctx.store.get_host(name), ctx.liveness_of(name))


@router.patch("/{name}", response_model=HostOut)
def update_host(
    name: str, body: HostUpdate, ctx: AppContext = Depends(context), _: Principal = WRITE
) -> HostOut:
    current = ctx.store.get_host(name)
    with field_prefix("body"):
        changed = body.apply(current)
    with references(segment="segment"):
        return HostOut.of(ctx.store.update_host(changed))


@router.delete("/{name}", status_code=204)
def delete_host(name: str, ctx: AppContext = Depends(context), _: Principal = WRITE) -> Response:
    ctx.store.delete_host(name)
    return Response(status_code=204)


@router.post("/{name}/maintenance", response_model=HostOut)
def set_maintenance(
    name: str,
    body: MaintenanceRequest,
    ctx: AppContext = Depends(context),
    who: Principal = MAINTAIN,
) -> HostOut:
    """Enter (`enabled: true`) or leave maintenance. Repeating the current
    setting changes nothing and records no event."""
    host = ctx.store.get_host(name)
    if host.maintenance == body.enabled:
        return HostOut.of(host)
    return HostOut.of(_switch_maintenance(ctx, host, body, who))


def _switch_maintenance(
    ctx: AppContext, host: Host, body: MaintenanceRequest, who: Principal
) -> Host:
    target = HostState.MAINTENANCE if body.enabled else HostState.UP
    reason = body.reason or ("maintenance on" if body.enabled else "maintenance off")
    if host.state is target:
        # The flag disagrees with the state (e.g. an old row): fix the flag
        # only, since the state machine has nothing to move.
        return ctx.store.update_host(replace(host, maintenance=body.enabled))
    moved, event = transition_host(host, target, reason, ctx.clock.now())
    event = replace(event, payload={**event.payload, "by": who.name or who.role})
    return ctx.store.update_host(replace(moved, maintenance=body.enabled), events=[event])


# -- operator fencing ----------------------------------------------------------

FENCE = Depends(authorize(Permission.HOSTS_FENCE))
ACKABLE = (HostState.SUSPECT, HostState.PARTITIONED, HostState.FAILED, HostState.FENCING)


def _operations(ctx: AppContext) -> HostOperations:
    if ctx.operations is None:
        raise TemporaryError("the controller's engine is not running in this process", 5.0)
    return ctx.operations


@router.get("/{name}/power-status", response_model=PowerStatusOut)
async def power_status(
    name: str, ctx: AppContext = Depends(context), _: Principal = FENCE
) -> PowerStatusOut:
    """Read the host's power through every configured method (BMC)."""
    ops = _operations(ctx)
    await asyncio.to_thread(ctx.store.get_host, name)  # 404 for an unknown host
    return PowerStatusOut(host=name, methods=await ops.power_status(name))


@router.post("/{name}/fence-ack", status_code=202, response_model=FenceAckOut)
async def fence_ack(
    name: str, ctx: AppContext = Depends(context), who: Principal = FENCE
) -> FenceAckOut:
    """An operator confirms the host is powered off (the `manual` fence level).

    Only a host that is in trouble can be acknowledged; the acknowledgement
    is recorded on the host's recovery job and in its events, with who gave it."""
    ops = _operations(ctx)
    host = await asyncio.to_thread(ctx.store.get_host, name)
    if host.state not in ACKABLE:
        raise Conflict(
            f"host {name!r} is {host.state.value}: only a suspect, partitioned, failed or "
            "fencing host can be acknowledged as powered off"
        )
    by = who.name or who.role
    await ops.fence_ack(name, by)
    return FenceAckOut(host=name, acknowledged_by=by)
