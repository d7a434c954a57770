"""`POST /v1/instances/{id}/actions`: a user's or operator's instance action.

Body `{"action": "restart"|"reset"|"stop"|"start"|"evacuate"|"rebuild"|
"ignore", "host": <evacuate target, optional>}`; answers 202 with the
action job (`GET /v1/jobs/{id}` follows it). The running engine checks the
safety rules (vmha.domain.decisions.refusal) and answers 409 with the
reason when the action may not run now, e.g. an evacuate of an instance
whose host is not fenced. Project tokens act only on their project's
instances (another project's instance is 404). 503 when this process runs
no engine. Roles: `instances:write` (admin, operator, project).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.routes.common import shown_job
from vmha.api.schemas import ActionRequest, JobOut
from vmha.controller.inbox import NOT_RUNNING
from vmha.domain.commands import InstanceAction
from vmha.domain.errors import TemporaryError
from vmha.domain.model import Job
from vmha.errors import NotFound, PermissionDenied

router = APIRouter(tags=["instances"])
WRITE = Depends(authorize(Permission.INSTANCES_WRITE))


def who_of(who: Principal) -> str:
    return who.name or (f"project:{who.project}" if who.project else who.role)


@router.post("/v1/instances/{instance_id}/actions", status_code=202, response_model=JobOut)
async def instance_action(
    instance_id: str, body: ActionRequest, ctx: AppContext = Depends(context),
    who: Principal = WRITE,
) -> JobOut:
    """Run an action on the instance as a job; 409 says why it may not."""
    if who.project is not None and body.host is not None:  # would reveal which hosts exist
        raise PermissionDenied("choosing the target host (body.host) is for admins and "
                               "operators; leave it out and vmha chooses like a recovery")
    if ctx.inbox is None:
        raise TemporaryError(NOT_RUNNING, 5.0)
    instance = await asyncio.to_thread(ctx.store.get_instance, instance_id)
    if who.project is not None and instance.project != who.project:
        raise NotFound("instance", instance_id)
    job: Job = await ctx.ask(InstanceAction(instance_id, body.action, body.host, who_of(who)))
    return shown_job(job, who)
