"""`GET /v1/events/stream`: the outbox as Server-Sent Events.

Each event is one frame: `id:` the event id (the cursor), `event:` its
type, `data:` its CloudEvents JSON. The stream starts after the
`Last-Event-ID` header (what EventSource sends when it reconnects), else
after `?since=`, else after the newest stored event (only what happens
from now on). Filters: `?type=` (repeatable, trailing `*` for a prefix)
and, as in `GET /v1/events`, a project token sees only its project's
events. A comment line is sent every `[events] sse_heartbeat_s` so
proxies keep the connection open. The stream ends when the client goes
away (Starlette cancels the generator) or when the service shuts down
(`close_streams`).

Reads the store in a thread every `[events] poll_interval_s`; waits
through the app's Clock. Writes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from vmha.adapters.bus.render import cloudevent
from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.domain.model import Event
from vmha.errors import ValidationError
from vmha.ports import EventQuery

router = APIRouter(tags=["events and jobs"])
EVENTS = Depends(authorize(Permission.EVENTS_READ))
BATCH = 500
STOP_FLAG = "vmha_streams_closed"


def close_streams(request_app: object) -> None:
    """Ask every open stream of this app to end (at service shutdown)."""
    state = request_app.state  # type: ignore[attr-defined]
    setattr(state, STOP_FLAG, True)


def frame(event: Event, source: str) -> str:
    data = json.dumps(cloudevent(event, source), separators=(",", ":"), sort_keys=True)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


def _start(ctx: AppContext, last_event_id: str | None, since: int | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise ValidationError(
                "header.Last-Event-ID", f"{last_event_id!r} is not an event id"
            ) from None
        if value < 0:
            raise ValidationError("header.Last-Event-ID", "must be zero or more")
        return value
    return since if since is not None else ctx.store.last_event_id()


@router.get("/v1/events/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_events(
    request: Request,
    since: int | None = Query(None, ge=0, le=2**63 - 1,
                              description="start after this event id"),
    type_: list[str] = Query([], alias="type"),
    last_event_id: str | None = Header(None, description="resume after this event id"),
    ctx: AppContext = Depends(context),
    who: Principal = EVENTS,
) -> StreamingResponse:
    cursor = await asyncio.to_thread(_start, ctx, last_event_id, since)
    query = EventQuery(since=cursor, types=tuple(type_), project=who.project, limit=BATCH)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_frames(request, ctx, query), media_type="text/event-stream",
                             headers=headers)


async def _frames(request: Request, ctx: AppContext, query: EventQuery) -> AsyncIterator[str]:
    settings = ctx.settings.events
    yield f"retry: 1000\n: vmha event stream after {query.since}\n\n"
    last_sent = ctx.clock.now()
    while not getattr(request.app.state, STOP_FLAG, False):
        events = await asyncio.to_thread(ctx.store.list_events, query)
        for event in events:
            yield frame(event, settings.source)
        if events:
            query = EventQuery(since=events[-1].id, types=query.types,
                               project=query.project, limit=BATCH)
            last_sent = ctx.clock.now()
            continue
        if ctx.clock.now() - last_sent >= settings.sse_heartbeat_s:
            yield ": keep-alive\n\n"
            last_sent = ctx.clock.now()
        await ctx.clock.sleep(settings.poll_interval_s)

