"""`/v1/segments`: failure domains (key: name). Writes are admin-only.
Reads say whether the mass-failure guard paused the segment's recovery
(`recovery_paused`, `paused_reason`: from its last guard event);
`POST .../resume` (admin, operator) asks the running engine to resume a
segment its guard paused (503 when this process runs none).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context, field_prefix, references
from vmha.api.inventory import pause_reasons
from vmha.api.routes.common import Paging, list_errors, location, page_of, paging_for
from vmha.api.schemas import PageOut, SegmentCreate, SegmentOut, SegmentResumeOut, SegmentUpdate
from vmha.domain.commands import ResumeSegment

router = APIRouter(prefix="/v1/segments", tags=["segments"])
READ = Depends(authorize(Permission.SEGMENTS_READ))
WRITE = Depends(authorize(Permission.SEGMENTS_WRITE))
RESUME = Depends(authorize(Permission.SEGMENTS_RESUME))


@router.get("", response_model=PageOut[SegmentOut])
def list_segments(
    page: Paging = Depends(paging_for("name")),
    enabled: bool | None = Query(None),
    ctx: AppContext = Depends(context),
    _: Principal = READ,
) -> dict[str, object]:
    filters = {"enabled": None if enabled is None else str(enabled).lower()}
    with list_errors():
        result = ctx.store.list_segments(page.query(filters))
    paused = pause_reasons(ctx.store, [s.name for s in result.items])
    return page_of(result, lambda s: SegmentOut.of(s, paused.get(s.name)))


@router.post("", status_code=201, response_model=SegmentOut)
def create_segment(
    body: SegmentCreate, response: Response, ctx: AppContext = Depends(context),
    _: Principal = WRITE,
) -> SegmentOut:
    with field_prefix("body"):
        segment = body.to_domain()
    with references(default_policy="policy"):
        created = ctx.store.create_segment(segment)
    response.headers["Location"] = location("segments", created.name)
    return SegmentOut.of(created)


@router.get("/{name}", response_model=SegmentOut)
def get_segment(name: str, ctx: AppContext = Depends(context), _: Principal = READ) -> SegmentOut:
    segment = ctx.store.get_segment(name)
    return SegmentOut.of(segment, pause_reasons(ctx.store, [name]).get(name))


@router.patch("/{name}", response_model=SegmentOut)
def update_segment(
    name: str, body: SegmentUpdate, ctx: AppContext = Depends(context), _: Principal = WRITE
) -> SegmentOut:
    current = ctx.store.get_segment(name)
    with field_prefix("body"):
        changed = body.apply(current)
    with references(default_policy="policy"):
        return SegmentOut.of(ctx.store.update_segment(changed))


@router.delete("/{name}", status_code=204)
def delete_segment(name: str, ctx: AppContext = Depends(context), _: Principal = WRITE) -> Response:
    ctx.store.delete_segment(name)
    return Response(status_code=204)


@router.post("/{name}/resume", response_model=SegmentResumeOut)
async def resume_segment(
    name: str, ctx: AppContext = Depends(context), who: Principal = RESUME
) -> SegmentResumeOut:
    """Resume automatic fencing and recovery in a segment the mass-failure
    guard paused (too many hosts failed at once). Check first that the
    failed hosts are really down and not just cut off from this controller:
    resumed, they are fenced. 409 when the segment is not paused; the
    resume is recorded as `segment.recovery_resumed` with who gave it."""
    by = who.name or who.role
    await ctx.ask(ResumeSegment(name, by))
    return SegmentResumeOut(segment=name, resumed_by=by)
