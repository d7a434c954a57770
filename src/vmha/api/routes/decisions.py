"""`POST /v1/decisions/{token}`: answer a custom decision.

The token comes from the `decision.requested` event. Body
`{"action": <one of the event's allowed actions>}`. Answers 202 with the
settled decision job and the action job it started (none for `ignore`).
409 when the decision is settled already: a late answer learns that the
decision timed out and what was done instead (the fallback); 409 too
when the chosen action may not run now (the decision stays open). 404
for an unknown token or another project's decision, 422 for an action
that is not allowed. Roles: `instances:write`; project tokens answer only
their project's decisions. 503 when this process runs no engine.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.routes.actions import engine_of, who_of
from vmha.api.schemas import DecisionAnswer, DecisionOut, JobOut

router = APIRouter(tags=["decisions"])
WRITE = Depends(authorize(Permission.INSTANCES_WRITE))


@router.post("/v1/decisions/{token}", status_code=202, response_model=DecisionOut)
async def answer_decision(
    token: str, body: DecisionAnswer, ctx: AppContext = Depends(context),
    who: Principal = WRITE,
) -> DecisionOut:
    """Settle the decision with the chosen action."""
    engine = engine_of(ctx)
    decision, action = await engine.decide(token, body.action, who_of(who), who.project)
    return DecisionOut(decision=JobOut.of(decision),
                       job=None if action is None else JobOut.of(action))
