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
from typing import Protocol

from fastapi import APIRouter, Depends

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.schemas import ActionRequest, JobOut
from vmha.domain.errors import TemporaryError
from vmha.domain.model import Job
from vmha.errors import NotFound

router = APIRouter(tags=["instances"])
WRITE = Depends(authorize(Permission.INSTANCES_WRITE))


class InstanceOperations(Protocol):
    """What the running controller offers for custom recovery (vmha.cli.service)."""

    async def instance_action(self, instance_id: str, action: str, target: str | None,
                              who: str) -> Job: ...

    async def decide(self, token: str, action: str, who: str,
                     project: str | None = None) -> tuple[Job, Job | None]: ...


def engine_of(ctx: AppContext) -> InstanceOperations:
    ops = ctx.operations
    if ops is None or not hasattr(ops, "instance_action"):
        raise TemporaryError("the controller's engine is not running in this process", 5.0)
    engine: InstanceOperations = ops  # type: ignore[assignment]
    return engine


def who_of(who: Principal) -> str:
    return who.name or (f"project:{who.project}" if who.project else who.role)


@router.post("/v1/instances/{instance_id}/actions", status_code=202, response_model=JobOut)
async def instance_action(
    instance_id: str, body: ActionRequest, ctx: AppContext = Depends(context),
    who: Principal = WRITE,
) -> JobOut:
    """Run an action on the instance as a job; 409 says why it may not."""
    engine = engine_of(ctx)
    instance = await asyncio.to_thread(ctx.store.get_instance, instance_id)
    if who.project is not None and instance.project != who.project:
        raise NotFound("instance", instance_id)
    job = await engine.instance_action(instance_id, body.action, body.host, who_of(who))
    return JobOut.of(job)
