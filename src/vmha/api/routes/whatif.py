"""`/v1/whatif`: what vmha would do if hosts failed now. Changes nothing.

`POST /v1/whatif {"fail": [...]}` runs the mass-failure guard and the
recovery planner (vmha.domain.whatif) on the live inventory the API reads
(vmha.api.inventory): where each instance of those hosts would go, which
would find no host and why, which are `notify`/`custom`/`off`, and whether
the guard would pause the segment. `GET /v1/whatif/single-host` is the
N+1 check: the same for every single host that is up. Roles: hosts:read
and instances:read (admin, operator, viewer): the answer names hosts and
every project's instances.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.inventory import read_inventory
from vmha.api.schemas import (
    SingleFailureOut,
    SingleFailuresOut,
    WhatIfOut,
    WhatIfRequest,
)
from vmha.config import controller_settings
from vmha.domain.whatif import WhatIf, single_failures, what_if
from vmha.errors import ValidationError

router = APIRouter(prefix="/v1/whatif", tags=["what-if"])


def _reader(who: Principal = Depends(authorize(Permission.HOSTS_READ))) -> Principal:
    return authorize(Permission.INSTANCES_READ)(who)


READ = Depends(_reader)


def _window(ctx: AppContext) -> float:
    return float(controller_settings(ctx.settings).mass_failure_window_s)


@router.post("", response_model=WhatIfOut)
async def post_whatif(body: WhatIfRequest, ctx: AppContext = Depends(context),
                      _: Principal = READ) -> WhatIfOut:
    """The planner's and the guard's decision if the `fail` hosts failed now."""
    inv = await asyncio.to_thread(read_inventory, ctx.store)
    unknown = sorted(set(body.fail) - set(inv.hosts))
    if unknown:
        raise ValidationError("body.fail", f"no host named {', '.join(unknown)}")
    return WhatIfOut.of(what_if(inv, body.fail, ctx.clock.now(), _window(ctx)))


@router.get("/single-host", response_model=SingleFailuresOut)
async def single_host(ctx: AppContext = Depends(context),
                      _: Principal = READ) -> SingleFailuresOut:
    """For every host that is up: could its segment absorb its failure?"""
    inv = await asyncio.to_thread(read_inventory, ctx.store)
    results = single_failures(inv, ctx.clock.now(), _window(ctx))
    hosts = [_summary(w, inv.hosts[w.failed[0]].segment) for w in results]
    return SingleFailuresOut(hosts=hosts, all_absorbed=all(h.absorbed for h in hosts))


def _summary(w: WhatIf, segment: str) -> SingleFailureOut:
    out = WhatIfOut.of(w)
    unplaceable = [i for i in out.instances if i.action == "unplaceable"]
    reasons = [s.reason for s in out.segments if not s.recovers]
    if w.isolated:
        reasons.append("every host would look down: no fencing anywhere")
    if unplaceable:
        reasons.append(f"{len(unplaceable)} instance(s) would find no host")
    return SingleFailureOut(
        host=w.failed[0], segment=segment, absorbed=w.absorbed,
        moved=sum(1 for i in out.instances if i.action == "move"),
        unplaceable=unplaceable,
        not_recovered=sum(1 for i in out.instances if i.action in ("notify", "custom", "off")),
        reason="; ".join(reasons))
