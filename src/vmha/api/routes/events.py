"""`/v1/events` (the outbox, read by cursor) and `/v1/jobs` (recoveries).

Events: `since` is a cursor (events with a larger id); `next_since` in the
answer is the cursor for the next call, so a poller simply passes it back.
A project token gets only its project's events; naming another project
is 403. Jobs are not visible to project tokens (they concern hosts).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.routes.common import Paging, list_errors, page_of, page_size, paging
from vmha.api.schemas import EventOut, EventPage, JobOut, PageOut
from vmha.domain.model import JobKind, JobState
from vmha.errors import PermissionDenied
from vmha.ports import EventQuery

router = APIRouter(tags=["events and jobs"])
EVENTS = Depends(authorize(Permission.EVENTS_READ))
JOBS = Depends(authorize(Permission.JOBS_READ))


@router.get("/v1/events", response_model=EventPage)
def list_events(
    since: int = Query(0, ge=0, le=2**63 - 1, description="return events with a larger id"),
    type_: list[str] = Query(
        [], alias="type", description="event type; repeatable; a trailing * matches a prefix"
    ),
    subject: str | None = Query(None),
    project: str | None = Query(None),
    limit: int | None = Query(None, ge=1, description="default 100"),
    ctx: AppContext = Depends(context),
    who: Principal = EVENTS,
) -> EventPage:
    if who.project is not None:
        if project is not None and project != who.project:
            raise PermissionDenied(
                f"a token of project {who.project!r} may only read project {who.project!r}"
            )
        project = who.project
    query = EventQuery(since=since, types=tuple(type_), subject=subject, project=project,
                       limit=page_size(limit, ctx))
    with list_errors():
        events = ctx.store.list_events(query)
    next_since = events[-1].id if events else since
    return EventPage(items=[EventOut.of(e) for e in events], next_since=next_since)


@router.get("/v1/jobs", response_model=PageOut[JobOut])
def list_jobs(
    page: Paging = Depends(paging),
    kind: JobKind | None = Query(None),
    state: JobState | None = Query(None),
    subject: str | None = Query(None),
    ctx: AppContext = Depends(context),
    _: Principal = JOBS,
) -> dict[str, object]:
    filters = {"kind": None if kind is None else kind.value,
               "state": None if state is None else state.value, "subject": subject}
    with list_errors():
        result = ctx.store.list_jobs(page.query(filters))
    return page_of(result, JobOut.of)


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, ctx: AppContext = Depends(context), _: Principal = JOBS) -> JobOut:
    return JobOut.of(ctx.store.get_job(job_id))
