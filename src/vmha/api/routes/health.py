"""`/healthz` (liveness) and `/readyz` (readiness), both without auth:
load balancers and supervisors call them. `/readyz` asks the store
whether it answers and whether its schema is current; 503 otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vmha.api.context import AppContext, context
from vmha.api.schemas import Status
from vmha.errors import StoreUnavailable

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
    return Status(status="ready")
