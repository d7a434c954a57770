"""`POST /v1/decisions`: answer a custom decision.

The token comes from the `decision.requested` event. Body `{"token": ...,
"action": <one of the event's allowed actions>}`: the token travels in the
body, never in a URL (where proxies and access logs keep it). The older
`POST /v1/decisions/{token}` with `{"action"}` still works, deprecated;
vmha's access log masks its token (vmha.redact). Answers 202 with the
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
from vmha.api.routes.actions import who_of
from vmha.api.routes.common import shown_job
from vmha.api.schemas import DecisionAnswer, DecisionAnswerWithToken, DecisionOut
from vmha.domain.commands import Decide

router = APIRouter(tags=["decisions"])
WRITE = Depends(authorize(Permission.INSTANCES_WRITE))


@router.post("/v1/decisions", status_code=202, response_model=DecisionOut,
             responses={404: {"description": "no such decision (or another project's)"}})
async def answer_decision(
    body: DecisionAnswerWithToken, ctx: AppContext = Depends(context),
    who: Principal = WRITE,
) -> DecisionOut:
    """Settle the decision of `token` with the chosen action (the token in
    the body: it never appears in a URL or an access log)."""
    return await _answer(ctx, who, body.token, body.action)


@router.post("/v1/decisions/{token}", status_code=202, response_model=DecisionOut,
             deprecated=True)
async def answer_decision_in_path(
    token: str, body: DecisionAnswer, ctx: AppContext = Depends(context),
    who: Principal = WRITE,
) -> DecisionOut:
    """Deprecated: the token in the path. Use `POST /v1/decisions` with the
    token in the body; vmha masks the token in its access log, proxies may not."""
    return await _answer(ctx, who, token, body.action)


async def _answer(ctx: AppContext, who: Principal, token: str, action: str) -> DecisionOut:
    decision, job = await ctx.ask(Decide(token, action, who_of(who), who.project))
    return DecisionOut(decision=shown_job(decision, who),
                       job=None if job is None else shown_job(job, who))
