"""`GET /v1/controller`: the running controller's own load (viewer and up);
`GET /v1/controllers`: the group of controllers as this one sees it.

Whether it is overloaded and why, how far behind its heartbeat intake and
its detector tick are, and the intake's counters: heartbeats accepted and
dropped by layer (the kernel's receive-buffer drops; the receiver's
`malformed`, `unknown_host`, `bad_signature`, `replayed`), acks sent, the
receive buffer it got. 503 when this process runs no engine. Read from
`AppContext.controller_status` (set by `vmha serve`); no I/O here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import Field

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context
from vmha.api.schemas import _Out
from vmha.errors import TemporaryError

router = APIRouter(prefix="/v1/controller", tags=["controller"])
group_router = APIRouter(prefix="/v1/controllers", tags=["controller"])


class ControllerOut(_Out):
    hosts_watched: int = Field(description="hosts the failure detector follows")
    overloaded: bool
    overload_reason: str = ""
    intake_lag_s: float = Field(description="how far behind now the heartbeat intake has read")
    tick_lag_s: float = Field(description="how late the last detector tick ran")
    heartbeats_applied: int = Field(description="heartbeats handed to the detector")
    heartbeats: dict[str, int] = Field(
        description="intake counters: accepted, malformed, unknown_host, bad_signature, "
        "replayed, kernel_drops, acks_sent, ack_errors, batches, largest_batch, "
        "worker_restarts, receive_buffer_bytes, receive_buffer_requested")


@router.get("", response_model=ControllerOut)
def controller(ctx: AppContext = Depends(context),
               _: Principal = Depends(authorize(Permission.HOSTS_READ))) -> dict[str, Any]:
    if ctx.controller_status is None:
        raise TemporaryError("the controller's engine is not running in this process", 5.0)
    return dict(ctx.controller_status())


class MemberOut(_Out):
    name: str
    api_url: str
    heartbeat: str = Field(description="where agents send heartbeats (host:port, UDP)")
    leader: bool
    owned_hosts: int = Field(description="registered hosts of its share on the hash ring of "
                             "the members (heartbeat sharding); alone: all of them")
    silent_hosts: int | None = Field(
        description="hosts of its share it reported silent in its last verdicts (None: the "
        "leader, whose detector judges its share itself, or no report yet)")


class ControllersOut(_Out):
    self_: str = Field(alias="self", description="the controller that answered")
    coordination: str = Field(description="local (one controller) or etcd")
    healthy: bool = Field(description="the last coordination round reached the service")
    error: str = ""
    leader: str | None = Field(description="who runs the recovery engine (None: nobody)")
    epoch: int = Field(description="this controller's leader epoch in the store (0: follower)")
    lease_s: float
    round_age_s: float | None = Field(description="seconds since the last coordination round")
    members: list[MemberOut]
    silent: list[str] = Field(
        default_factory=list,
        description="hosts of this controller's share it hears no longer (its last verdicts "
        "as a follower, also while no controller leads; at most 1000)")


@group_router.get("", response_model=ControllersOut, response_model_by_alias=True)
def controllers(ctx: AppContext = Depends(context),
                _: Principal = Depends(authorize(Permission.HOSTS_READ))) -> dict[str, Any]:
    if ctx.controllers is None:
        raise TemporaryError("this process runs no controller", 5.0)
    return dict(ctx.controllers())
