"""Pieces every resource router shares: list paging, the store's list
errors as query errors, and `Location` headers. No I/O of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

from fastapi import Depends, Query

from vmha.api.context import AppContext, context, field_prefix
from vmha.errors import NotFound, ValidationError
from vmha.ports import ListQuery, Page

T = TypeVar("T")
DEFAULT_LIMIT = 100
U = TypeVar("U")


@dataclass(frozen=True)
class Paging:
    limit: int
    marker: str | None
    sort: str | None
    desc: bool

    def query(self, filters: Mapping[str, str | None]) -> ListQuery:
        given = {k: v for k, v in filters.items() if v is not None}
        return ListQuery(self.limit, self.marker, self.sort, self.desc, given)


def paging(
    limit: int | None = Query(
        None, ge=1, description="page size (default 100, at most api.max_page_size)"
    ),
    marker: str | None = Query(None, description="key of the last item of the previous page"),
    sort: str | None = Query(None, description="field to sort by"),
    desc: bool = Query(False, description="sort in descending order"),
    ctx: AppContext = Depends(context),
) -> Paging:
    return Paging(page_size(limit, ctx), marker or None, sort or None, desc)


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


def page_of(page: Page[T], convert: Callable[[T], U]) -> dict[str, object]:
    return {"items": [convert(item) for item in page.items], "next_marker": page.next_marker}


def location(collection: str, key: str) -> str:
    return f"/v1/{collection}/{quote(key, safe='')}"
