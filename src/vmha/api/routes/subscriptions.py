"""`/v1/subscriptions`: webhook subscriptions and their delivery state.

Create / list / get / delete a subscription; list its recent deliveries
(dead letters included); ask for a dead letter to be sent again. The
secret is write-only (answers show `***`). The URL is checked against
SSRF rules (`vmha.adapters.bus.urls`) with `[events]
allow_private_destinations`. A project token's subscription always gets
its project as filter, it sees only its own subscriptions, and another
project's subscription is 404. A new subscription starts after the newest
stored event (it receives what happens from now on).

The delivery itself is done by the dispatcher in the controller service;
these handlers only read and write the store.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vmha.adapters.bus import urls
from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context, field_prefix
from vmha.api.routes.common import TYPES_MAX, EventType
from vmha.errors import Conflict, NotFound, PermissionDenied
from vmha.ports import Delivery, DeliveryStatus, Subscription

router = APIRouter(tags=["subscriptions"])
READ = Depends(authorize(Permission.SUBSCRIPTIONS_READ))
WRITE = Depends(authorize(Permission.SUBSCRIPTIONS_WRITE))


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(max_length=urls.URL_MAX, description="http(s) webhook URL")
    event_types: list[EventType] = Field(
        min_length=1, max_length=TYPES_MAX,
        description="exact types or prefixes ending in '*', e.g. instance.*",
    )
    secret: str = Field(min_length=16, max_length=256, description="HMAC key; write-only")
    subject: str | None = Field(None, min_length=1, max_length=255)
    project: str | None = Field(None, min_length=1, max_length=255)

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or len(pattern) > 255 or "\x00" in pattern:
                raise ValueError(f"{pattern!r} is not an event type or prefix")
            if "*" in pattern[:-1]:
                raise ValueError(f"{pattern!r}: '*' is only allowed at the end")
        return value

    @field_validator("url", "secret", "subject", "project")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class SubscriptionOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    secret: str = Field(description="always '***': the secret is write-only")
    subject: str | None
    project: str | None
    created_at: float
    cursor: int = Field(description="id of the last event the dispatcher finished with")

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(id=s.id, url=s.url, event_types=list(s.event_types), secret="***",  # noqa: S106
                   subject=s.subject, project=s.project, created_at=s.created_at,
                   cursor=s.cursor)


class DeliveryOut(BaseModel):
    event_id: int
    status: DeliveryStatus
    attempts: int
    last_error: str
    updated_at: float
    dead_letter: bool

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(event_id=d.event_id, status=d.status, attempts=d.attempts,
                   last_error=d.last_error, updated_at=d.updated_at,
                   dead_letter=d.status is DeliveryStatus.DEAD)


class DeliveriesOut(BaseModel):
    subscription: str
    cursor: int
    items: list[DeliveryOut]


def _owner(who: Principal) -> str:
    return who.project or ""


def _visible(ctx: AppContext, who: Principal, subscription_id: str) -> Subscription:
    """The subscription, or 404 when it is missing or another project's."""
    sub = ctx.store.get_subscription(subscription_id)
    if who.project is not None and sub.owner != who.project:
        raise NotFound("subscription", subscription_id)
    return sub


def _project_filter(who: Principal, wanted: str | None) -> str | None:
    if who.project is None:
        return wanted
    if wanted is not None and wanted != who.project:
        raise PermissionDenied(
            f"a token of project {who.project!r} may only subscribe to project "
            f"{who.project!r}"
        )
    return who.project


@router.post("/v1/subscriptions", status_code=201, response_model=SubscriptionOut)
def create_subscription(
    body: SubscriptionCreate, response: Response,
    ctx: AppContext = Depends(context), who: Principal = WRITE,
) -> SubscriptionOut:
    with field_prefix("body"):
        urls.check_url(body.url, ctx.settings.events.allow_private_destinations)
    sub = Subscription(
        id=ctx.ids.new_id(), url=body.url, secret=body.secret,
        event_types=tuple(body.event_types), subject=body.subject,
        project=_project_filter(who, body.project), owner=_owner(who),
        created_at=ctx.clock.now(), cursor=ctx.store.last_event_id(),
    )
    created = ctx.store.create_subscription(sub)
    response.headers["Location"] = f"/v1/subscriptions/{created.id}"
    return SubscriptionOut.of(created)


@router.get("/v1/subscriptions", response_model=dict[str, list[SubscriptionOut]])
def list_subscriptions(
    ctx: AppContext = Depends(context), who: Principal = READ,
) -> dict[str, Any]:
    owner = None if who.project is None else who.project
    return {"items": [SubscriptionOut.of(s) for s in ctx.store.list_subscriptions(owner)]}


@router.get("/v1/subscriptions/{subscription_id}", response_model=SubscriptionOut)
def get_subscription(
    subscription_id: str, ctx: AppContext = Depends(context), who: Principal = READ,
) -> SubscriptionOut:
    return SubscriptionOut.of(_visible(ctx, who, subscription_id))


@router.delete("/v1/subscriptions/{subscription_id}", status_code=204)
def delete_subscription(
    subscription_id: str, ctx: AppContext = Depends(context), who: Principal = WRITE,
) -> Response:
    _visible(ctx, who, subscription_id)
    ctx.store.delete_subscription(subscription_id)
    return Response(status_code=204)


@router.get("/v1/subscriptions/{subscription_id}/deliveries", response_model=DeliveriesOut)
def list_deliveries(
    subscription_id: str,
    status: DeliveryStatus | None = Query(None, description="only deliveries in this state"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: AppContext = Depends(context), who: Principal = READ,
) -> DeliveriesOut:
    sub = _visible(ctx, who, subscription_id)
    items = ctx.store.list_deliveries(subscription_id, status, limit)
    return DeliveriesOut(subscription=sub.id, cursor=sub.cursor,
                         items=[DeliveryOut.of(d) for d in items])


@router.post(
    "/v1/subscriptions/{subscription_id}/deliveries/{event_id}/redeliver",
    status_code=202, response_model=DeliveryOut,
)
def redeliver(
    subscription_id: str, event_id: int,
    ctx: AppContext = Depends(context), who: Principal = WRITE,
) -> DeliveryOut:
    """Queue a dead letter to be sent again (the dispatcher picks it up
    within `[events] refresh_s`)."""
    _visible(ctx, who, subscription_id)
    found = [d for d in ctx.store.list_deliveries(subscription_id, DeliveryStatus.DEAD, 1000)
             if d.event_id == event_id]
    if not found:  # not dead: say what it is instead, if known
        found = [d for d in ctx.store.list_deliveries(subscription_id, limit=1000)
                 if d.event_id == event_id]
    if not found:
        raise NotFound("delivery", f"{subscription_id}/{event_id}")
    if found[0].status is not DeliveryStatus.DEAD:
        raise Conflict(
            f"event {event_id} of subscription {subscription_id!r} is "
            f"{found[0].status.value}, not a dead letter; only dead letters can be re-sent"
        )
    queued = Delivery(subscription_id, event_id, DeliveryStatus.REDELIVER, found[0].attempts,
                      found[0].last_error, ctx.clock.now())
    ctx.store.save_deliveries(subscription_id, [queued])
    return DeliveryOut.of(queued)
