"""`/v1/events` (the outbox, read by cursor) and `/v1/jobs` (recoveries).

Events: `since` is a cursor (events with a larger id); `next_since` in the
answer is the cursor for the next call, so a poller simply passes it back.
A project token gets only its project's events; naming another project
is 403. Its jobs are those about its instances (instance recovery, action,
decision: `vmha.domain.jobs.project_of`), filtered by the store query so
that pages stay full; a host recovery or another project's job answers 404
exactly like a missing one, and as a marker 422 like a missing one. The
host names a tenant's job shows are the hosts its own instance ran on or
was sent to, which its events name already; the id of the host-recovery
job behind a decision is left out (that job is not the tenant's to read).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.routes.common import (
    EVENT_ID_MAX,
    Paging,
    list_errors,
    own_project,
    page_of,
    page_size,
    paging_for,
    shown_job,
    type_filters,
)
from vmha.api.schemas import EventOut, EventPage, JobOut, PageOut
from vmha.domain.jobs import project_of
from vmha.domain.model import Job, JobKind, JobState
from vmha.errors import NotFound
from vmha.ports import EventQuery

router = APIRouter(tags=["events and jobs"])
EVENTS = Depends(authorize(Permission.EVENTS_READ))
JOBS = Depends(authorize(Permission.JOBS_READ))


@router.get("/v1/events", response_model=EventPage)
def list_events(
    since: int = Query(0, ge=0, le=EVENT_ID_MAX, description="return events with a larger id"),
    types: tuple[str, ...] = Depends(type_filters),
    subject: str | None = Query(None),
    project: str | None = Query(None),
    limit: int | None = Query(None, ge=1, description="default 100"),
    ctx: AppContext = Depends(context),
    who: Principal = EVENTS,
) -> EventPage:
    project = own_project(who, project)
    query = EventQuery(since=since, types=types, subject=subject, project=project,
                       limit=page_size(limit, ctx))
    with list_errors():
        events = ctx.store.list_events(query)
    next_since = events[-1].id if events else since
    return EventPage(items=[EventOut.of(e) for e in events], next_since=next_since)


def _visible_job(ctx: AppContext, job_id: str, who: Principal) -> Job:
    """The job, if `who` may read it: a project token only its project's
    (anything else is NotFound, worded like a missing job)."""
    job = ctx.store.get_job(job_id)
    if who.project is not None and project_of(job.kind, job.data) != who.project:
        raise NotFound("job", job_id)
    return job


@router.get("/v1/jobs", response_model=PageOut[JobOut])
def list_jobs(
    page: Paging = Depends(paging_for("created_at", "updated_at", "state", "kind", "id")),
    kind: JobKind | None = Query(None),
    state: JobState | None = Query(None),
    subject: str | None = Query(None),
    project: str | None = Query(
        None, description="only the jobs about this project's instances (instance "
        "recovery, action, decision; never a host recovery)"),
    ctx: AppContext = Depends(context),
    who: Principal = JOBS,
) -> dict[str, object]:
    project = own_project(who, project)
    if page.marker is not None and who.project is not None:
        with list_errors():
            _visible_job(ctx, page.marker, who)
    filters = {"kind": None if kind is None else kind.value,
               "state": None if state is None else state.value, "subject": subject,
               "project": project}
    with list_errors():
        result = ctx.store.list_jobs(page.query(filters))
    return page_of(result, lambda job: shown_job(job, who))


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, ctx: AppContext = Depends(context), who: Principal = JOBS) -> JobOut:
    return shown_job(_visible_job(ctx, job_id, who), who)
