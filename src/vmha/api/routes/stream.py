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

Reads the store in a thread when the in-process bus says events were
committed (`vmha serve`), and every `[events] poll_interval_s` anyway (the
events other processes commit); without a bus it polls, waiting through the
app's Clock. Writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from vmha.adapters.bus.render import cloudevent
from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.routes.common import EVENT_ID_MAX, type_filters
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


LAST_EVENT_ID = r"^[0-9]{1,18}$"  # an event id (ids stay far below 10**18)


def _start(ctx: AppContext, last_event_id: str | None, since: int | None) -> int:
    if last_event_id is not None:
        if re.fullmatch(LAST_EVENT_ID, last_event_id) is None:
            raise ValidationError("header.Last-Event-ID",
                                  f"{last_event_id[:40]!r} is not an event id (1-18 digits)")
        return int(last_event_id)
    return since if since is not None else ctx.store.last_event_id()


@router.get("/v1/events/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_events(
    request: Request,
    since: int | None = Query(None, ge=0, le=EVENT_ID_MAX,
                              description="start after this event id"),
    types: tuple[str, ...] = Depends(type_filters),
    last_event_id: str | None = Header(None, description="resume after this event id",
                                       json_schema_extra={"pattern": LAST_EVENT_ID}),
    ctx: AppContext = Depends(context),
    who: Principal = EVENTS,
) -> StreamingResponse:
    cursor = await asyncio.to_thread(_start, ctx, last_event_id, since)
    query = EventQuery(since=cursor, types=types, project=who.project, limit=BATCH)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_frames(request, ctx, query), media_type="text/event-stream",
                             headers=headers)


async def _frames(request: Request, ctx: AppContext, query: EventQuery) -> AsyncIterator[str]:
    """Frames of the events after `query.since`: taken from the bus when it
    woke this stream and holds them all, else read from the store (the
    first read, the poll that finds other processes' events)."""
    settings = ctx.settings.events
    yield f"retry: 1000\n: vmha event stream after {query.since}\n\n"
    last_sent = ctx.clock.now()
    woken = False
    while not getattr(request.app.state, STOP_FLAG, False):
        fresh = ctx.bus.since(query.since) if woken and ctx.bus is not None else None
        if fresh:
            batch = fresh[:BATCH]
            events = [e for e in batch if query.matches(e)]
            newest = checked = batch[-1].id
            more = len(fresh) > BATCH
        else:
            checked = ctx.bus.newest if ctx.bus is not None else 0  # the read covers these
            events = await asyncio.to_thread(ctx.store.list_events, query)
            newest = events[-1].id if events else query.since
            more = len(events) == BATCH  # maybe a backlog: read on
        for event in events:
            yield frame(event, settings.source)
        if events:
            last_sent = ctx.clock.now()
        if newest > query.since:
            query = EventQuery(since=newest, types=query.types,
                               project=query.project, limit=BATCH)
        if more:
            woken = bool(fresh)
            continue
        if ctx.clock.now() - last_sent >= settings.sse_heartbeat_s:
            yield ": keep-alive\n\n"
            last_sent = ctx.clock.now()
        if ctx.bus is None:
            await ctx.clock.sleep(settings.poll_interval_s)
            woken = False
        else:  # woken by this process's next commit; the poll finds others'
            woken = await ctx.bus.wait(max(query.since, checked), settings.poll_interval_s)
