"""`/v1/policies`: named HA policies (key: name). Everyone may read them
(project tokens too, to pick one); only admins write them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context, field_prefix
from vmha.api.routes.common import Paging, list_errors, location, page_of, paging_for
from vmha.api.schemas import PageOut, PolicyCreate, PolicyOut, PolicyUpdate
from vmha.domain.policy import check_cloud

router = APIRouter(prefix="/v1/policies", tags=["policies"])
READ = Depends(authorize(Permission.POLICIES_READ))
WRITE = Depends(authorize(Permission.POLICIES_WRITE))


@router.get("", response_model=PageOut[PolicyOut])
def list_policies(
    page: Paging = Depends(paging_for("name")), ctx: AppContext = Depends(context),
    _: Principal = READ,
) -> dict[str, object]:
    with list_errors():
        result = ctx.store.list_policies(page.query({}))
    return page_of(result, PolicyOut.of)


@router.post("", status_code=201, response_model=PolicyOut)
def create_policy(
    body: PolicyCreate, response: Response, ctx: AppContext = Depends(context),
    _: Principal = WRITE,
) -> PolicyOut:
    with field_prefix("body"):
        named = body.to_domain()
    with field_prefix("body.policy"):
        check_cloud(named.policy, ctx.can_rebuild)
    created = ctx.store.create_policy(named)
    response.headers["Location"] = location("policies", created.name)
    return PolicyOut.of(created)


@router.get("/{name}", response_model=PolicyOut)
def get_policy(name: str, ctx: AppContext = Depends(context), _: Principal = READ) -> PolicyOut:
    return PolicyOut.of(ctx.store.get_policy(name))


@router.patch("/{name}", response_model=PolicyOut)
def update_policy(
    name: str, body: PolicyUpdate, ctx: AppContext = Depends(context), _: Principal = WRITE
) -> PolicyOut:
    current = ctx.store.get_policy(name)
    with field_prefix("body"):
        changed = body.apply(current)
    with field_prefix("body.policy"):
        check_cloud(changed.policy, ctx.can_rebuild)
    return PolicyOut.of(ctx.store.update_policy(changed))


@router.delete("/{name}", status_code=204)
def delete_policy(name: str, ctx: AppContext = Depends(context), _: Principal = WRITE) -> Response:
    ctx.store.delete_policy(name)
    return Response(status_code=204)
