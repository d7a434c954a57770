"""`/v1/segments`: failure domains (key: name). Writes are admin-only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context, field_prefix, references
from vmha.api.routes.common import Paging, list_errors, location, page_of, paging
from vmha.api.schemas import PageOut, SegmentCreate, SegmentOut, SegmentUpdate

router = APIRouter(prefix="/v1/segments", tags=["segments"])
READ = Depends(authorize(Permission.SEGMENTS_READ))
WRITE = Depends(authorize(Permission.SEGMENTS_WRITE))


@router.get("", response_model=PageOut[SegmentOut])
def list_segments(
    page: Paging = Depends(paging),
    enabled: bool | None = Query(None),
    ctx: AppContext = Depends(context),
    _: Principal = READ,
) -> dict[str, object]:
    filters = {"enabled": None if enabled is None else str(enabled).lower()}
    with list_errors():
        result = ctx.store.list_segments(page.query(filters))
    return page_of(result, SegmentOut.of)


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
    return SegmentOut.of(ctx.store.get_segment(name))


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
