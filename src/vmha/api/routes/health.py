"""`/healthz` (liveness) and `/readyz` (readiness), both without auth:
load balancers and supervisors call them. `/readyz` asks the store
whether it answers and whether its schema is current, and the running
engine whether it is overloaded (its heartbeat intake or detector behind:
see `GET /v1/controller`), and the coordination service (etcd) whether its
last round answered (`GET /v1/controllers`); 503 otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vmha.api.context import AppContext, context
from vmha.api.schemas import Status
from vmha.errors import StoreUnavailable, TemporaryError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status)
def healthz() -> Status:
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"description": "not ready"}})
def readyz(ctx: AppContext = Depends(context)) -> Status:
    ctx.store.ping()  # raises StoreUnavailable -> 503 problem
    if not ctx.store.schema_current():
        raise StoreUnavailable(
            "the database schema is not current; run 'vmha db upgrade' or restart 'vmha serve'"
        )
    group = ctx.controllers() if ctx.controllers is not None else {}
    if group and not group.get("healthy"):
        raise TemporaryError(f"coordination ({group.get('coordination')}) unreachable: "
                             f"{group.get('error')}", 5.0)
    status = ctx.controller_status() if ctx.controller_status is not None else {}
    if status.get("overloaded"):
        raise TemporaryError(f"the controller is overloaded: {status.get('overload_reason')}; "
                             "hosts are judged only on the heartbeats it has read", 5.0)
    return Status(status="ready")
