"""Pieces every resource router shares: list paging, the store's list
errors as query errors, what a project token sees (its own project's
filter, its view of a job), and `Location` headers. No I/O of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, TypeVar
from urllib.parse import quote

from fastapi import Depends, Query
from pydantic import Field

from vmha.api.auth import Principal
from vmha.api.context import AppContext, context, field_prefix
from vmha.api.schemas import JobOut
from vmha.domain.model import Job
from vmha.errors import NotFound, PermissionDenied, StaleWrite, ValidationError
from vmha.ports import ListQuery, Page

T = TypeVar("T")
DEFAULT_LIMIT = 100
REWRITES = 3  # a change refused as stale is made again on a fresh read this often
U = TypeVar("U")
EVENT_ID_MAX = 2**63 - 1  # event ids are 64-bit signed integers in the store
TYPE_PATTERN = r"^[a-z0-9_.]*\*?$"  # an event type, or a prefix ending in '*'
TYPES_MAX = 50  # type filters per request (also per subscription)
EventType = Annotated[str, Field(min_length=1, max_length=255, pattern=TYPE_PATTERN)]


def type_filters(
    type_: list[EventType] = Query(
        [], alias="type", max_length=TYPES_MAX,
        description="event type; repeatable (at most 50); a trailing * matches a prefix"),
) -> tuple[str, ...]:
    """The `type` filters of an event query (declared in OpenAPI as checked)."""
    return tuple(type_)


def rewrite(read: Callable[[], T], change: Callable[[T], T | None],
            write: Callable[[T], T]) -> T:
    """Read a versioned record, change it, write it. The store refuses a
    write made on an old copy (the engine changed the record's state
    meanwhile): the change is made again on a fresh read, so both survive;
    after REWRITES refusals the StaleWrite (409) goes to the client.
    `change` returning None means nothing to write (the record is answered)."""
    for attempt in range(REWRITES):
        current = read()
        changed = change(current)
        if changed is None:
            return current
        try:
            return write(changed)
        except StaleWrite:
            if attempt == REWRITES - 1:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Paging:
    limit: int
    marker: str | None
    sort: str | None
    desc: bool

    def query(self, filters: Mapping[str, str | None]) -> ListQuery:
        given = {k: v for k, v in filters.items() if v is not None}
        return ListQuery(self.limit, self.marker, self.sort, self.desc, given)


def paging_for(*sorts: str) -> Callable[..., Paging]:
    """The list parameters of one resource: `sort` declared (and checked)
    as one of its sortable fields `sorts` (the store's list of them; a test
    compares the two), `limit` up to `api.max_page_size` (the
    OpenAPI document states the configured maximum, vmha.api.openapi)."""
    fields = "|".join(sorts)

    def paging(
        limit: int | None = Query(
            None, ge=1, description="page size (default 100, at most api.max_page_size)"),
        marker: str | None = Query(
            None, description="key of the last item of the previous page (it must exist)"),
        sort: str | None = Query(None, pattern=f"^({fields})$",
                                 description=f"field to sort by: {', '.join(sorts)}"),
        desc: bool = Query(False, description="sort in descending order"),
        ctx: AppContext = Depends(context),
    ) -> Paging:
        return Paging(page_size(limit, ctx), marker or None, sort, desc)

    return paging


def page_size(limit: int | None, ctx: AppContext) -> int:
    """`limit`, or the default; never more than `api.max_page_size`."""
    largest = ctx.settings.api.max_page_size
    if limit is None:
        return min(DEFAULT_LIMIT, largest)
    if limit > largest:
        raise ValidationError("query.limit", f"{limit} is more than the largest page, {largest}")
    return limit


@contextmanager
def list_errors() -> Iterator[None]:
    """The store names query fields bare and reports an unknown marker as
    NotFound; both are the client's query, so 422 on `query.<field>`."""
    try:
        with field_prefix("query"):
            yield
    except NotFound as exc:
        raise ValidationError(
            "query.marker", f"{exc.detail}; start again without a marker"
        ) from exc


def own_project(who: Principal, wanted: str | None) -> str | None:
    """The project filter of a list: a project token's own (naming another
    project is 403), or `wanted` for staff."""
    if who.project is None:
        return wanted
    if wanted is not None and wanted != who.project:
        raise PermissionDenied(
            f"a token of project {who.project!r} may only see project {who.project!r}"
        )
    return who.project


def shown_job(job: Job, who: Principal) -> JobOut:
    """A job as `who` may see it: to a project token (which reads only its
    instances' jobs), without the id of the host-recovery job behind a
    decision, a job it may not read."""
    out = JobOut.of(job)
    if who.project is not None and "host_job" in out.data:
        out.data["host_job"] = None
    return out


def page_of(page: Page[T], convert: Callable[[T], U]) -> dict[str, object]:
    return {"items": [convert(item) for item in page.items], "next_marker": page.next_marker}


def location(collection: str, key: str) -> str:
    return f"/v1/{collection}/{quote(key, safe='')}"
