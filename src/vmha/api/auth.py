"""Bearer-token authentication and the role matrix of the REST API.

Every `/v1` endpoint declares one `Permission`; `authorize(permission)` is
the FastAPI dependency that checks the `Authorization: Bearer <token>`
header against the tokens configured in `settings.api.tokens` (read once,
when the app is built) and the token's role. 401 (with
`WWW-Authenticate: Bearer`) when the token is missing or wrong, 403 when
the role may not do this.

Role matrix (also in docs/api.md):

| permission          | admin | operator | viewer | project:<id>      |
|---------------------|:-----:|:--------:|:------:|:-----------------:|
| segments:read       |  yes  |   yes    |  yes   |  no               |
| segments:write      |  yes  |   no     |  no    |  no               |
| hosts:read          |  yes  |   yes    |  yes   |  no               |
| hosts:write         |  yes  |   no     |  no    |  no               |
| hosts:maintenance   |  yes  |   yes    |  no    |  no               |
| hosts:fence         |  yes  |   yes    |  no    |  no               |
| segments:resume     |  yes  |   yes    |  no    |  no               |
| instances:read      |  yes  |   yes    |  yes   |  own project only |
| instances:write     |  yes  |   yes    |  no    |  own project only |
| policies:read       |  yes  |   yes    |  yes   |  yes              |
| policies:write      |  yes  |   no     |  no    |  no               |
| events:read         |  yes  |   yes    |  yes   |  own project only |
| jobs:read           |  yes  |   yes    |  yes   |  own project only |
| agents:register     |  yes  |   no     |  no    |  no               |
| subscriptions:read  |  yes  |   yes    |  no    |  own project only |
| subscriptions:write |  yes  |   yes    |  no    |  own project only |

A fifth role, `agent`, holds only `agents:register` (for `vmha agent`).

"own project only" is enforced by the routes (they read
`Principal.project`): a project token's instance list, event feed and job
list are filtered server-side, naming another project is 403, and another
project's instance or job (or a host-recovery job) is 404 (its existence is
not revealed).

Tokens are compared in constant time against every configured token (no
early exit), through SHA-256 digests so that lengths leak nothing either.
Token values are never logged. This module does no I/O after start-up.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vmha.config import Settings
from vmha.errors import PermissionDenied, Unauthenticated


class Permission(str, enum.Enum):
    SEGMENTS_READ = "segments:read"
    SEGMENTS_WRITE = "segments:write"
    SEGMENTS_RESUME = "segments:resume"  # resume a segment the mass-failure guard paused
    HOSTS_READ = "hosts:read"
    HOSTS_WRITE = "hosts:write"
    HOSTS_MAINTENANCE = "hosts:maintenance"
    HOSTS_FENCE = "hosts:fence"
    INSTANCES_READ = "instances:read"
    INSTANCES_WRITE = "instances:write"
    POLICIES_READ = "policies:read"
    POLICIES_WRITE = "policies:write"
    EVENTS_READ = "events:read"
    JOBS_READ = "jobs:read"
    AGENTS_REGISTER = "agents:register"
    AGENTS_REPORT = "agents:report"  # domain events and inventory from host agents
    SUBSCRIPTIONS_READ = "subscriptions:read"
    SUBSCRIPTIONS_WRITE = "subscriptions:write"
    METRICS_READ = "metrics:read"  # GET /metrics (Prometheus)


P = Permission
_READ = frozenset(
    {P.SEGMENTS_READ, P.HOSTS_READ, P.INSTANCES_READ, P.POLICIES_READ, P.EVENTS_READ,
     P.JOBS_READ, P.METRICS_READ}
)
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "operator": _READ | {P.HOSTS_MAINTENANCE, P.HOSTS_FENCE, P.SEGMENTS_RESUME,
                         P.INSTANCES_WRITE, P.SUBSCRIPTIONS_READ, P.SUBSCRIPTIONS_WRITE},
    "viewer": _READ,
    "project": frozenset({P.INSTANCES_READ, P.INSTANCES_WRITE, P.POLICIES_READ, P.EVENTS_READ,
                          P.JOBS_READ, P.SUBSCRIPTIONS_READ, P.SUBSCRIPTIONS_WRITE}),
    "agent": frozenset({P.AGENTS_REGISTER, P.AGENTS_REPORT}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: role (`admin`, `operator`, `viewer`, `project`),
    the project id for project tokens, and the token's configured name."""

    role: str
    project: str | None = None
    name: str = ""

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


def principal_for_role(role: str, name: str = "") -> Principal:
    if role.startswith("project:"):
        return Principal("project", role.removeprefix("project:"), name)
    return Principal(role, None, name)


@dataclass(frozen=True)
class _Token:
    digest: bytes
    principal: Principal


class TokenTable:
    """The configured tokens, as digests; `lookup` is constant-time."""

    def __init__(self, tokens: Sequence[tuple[str, Principal]]) -> None:
        self._tokens = tuple(_Token(_digest(secret), who) for secret, who in tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        return cls(
            [(t.secret(), principal_for_role(t.role, t.name)) for t in settings.api.tokens]
        )

    def lookup(self, presented: str) -> Principal | None:
        wanted = _digest(presented)
        found: Principal | None = None
        for token in self._tokens:  # look at every token: no early exit
            if hmac.compare_digest(wanted, token.digest) and found is None:
                found = token.principal
        return found


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


_bearer = HTTPBearer(auto_error=False, description="A token from `api.tokens` in vmha.toml.")


PRINCIPAL_STATE = "vmha_principal"  # request state key set by vmha.api.limits


def principal_of(table: TokenTable, authorization: str | None) -> Principal:
    """The caller named by an `Authorization` header, or Unauthenticated."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "missing bearer token; send 'Authorization: Bearer <token>' "
            "(the CLI reads --token or VMHA_TOKEN)"
        )
    principal = table.lookup(token.strip())
    if principal is None:
        raise Unauthenticated("the bearer token is not valid; check --token or VMHA_TOKEN")
    return principal


def authenticate(
    request: Request,
    _credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # for OpenAPI
) -> Principal:
    """The caller; RequestLimits already checked the token of every /v1
    request before its body was read, and left the answer here."""
    known: Principal | None = getattr(request.state, PRINCIPAL_STATE, None)
    if known is not None:
        return known
    table: TokenTable = request.app.state.vmha.tokens
    return principal_of(table, request.headers.get("authorization"))


def authorize(permission: Permission) -> Callable[..., Principal]:
    """Dependency: the caller, who must hold `permission`."""

    def check(principal: Principal = Depends(authenticate)) -> Principal:
        if not principal.may(permission):
            role = principal.role if principal.project is None else f"project:{principal.project}"
            raise PermissionDenied(f"role {role!r} may not do this (needs {permission.value})")
        return principal

    return check
