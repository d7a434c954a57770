"""Builds the FastAPI application of the vmha controller.

`create_app(settings, store, clock, ids)` wires the routers, the
problem+json error handlers and the auth token table. Every dependency is
passed in and kept on `app.state.vmha` (no module globals), so tests and
`vmha serve` build apps the same way with different stores. Handlers are
plain `def`: the store is synchronous and FastAPI runs them in its
thread pool. Building the app does no I/O beyond reading token files.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from vmha import __version__
from vmha.api import openapi, problems
from vmha.api.auth import TokenTable
from vmha.api.context import AppContext, no_nul_characters
from vmha.api.limits import RequestLimits
from vmha.api.routes import (
    actions,
    agents,
    controller,
    decisions,
    events,
    health,
    hosts,
    instances,
    policies,
    segments,
    stream,
    subscriptions,
    whatif,
)
from vmha.config import Settings
from vmha.ports import Clock, IdGen, Store
from vmha.redact import redact_access_log

DESCRIPTION = """\
REST API of the vmha controller: segments, hosts, instances, HA policies,
events and recovery jobs. Every `/v1` call needs `Authorization: Bearer
<token>`; errors are `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings, store: Store, clock: Clock, ids: IdGen) -> FastAPI:
    """The API application for one controller."""
    app = FastAPI(
        title="vmha",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(no_nul_characters)],
    )
    app.state.vmha = AppContext(
        settings=settings, store=store, clock=clock, ids=ids,
        tokens=TokenTable.from_settings(settings),
    )
    problems.install(app)
    redact_access_log()  # the deprecated decision route carries a token in its path
    app.add_middleware(RequestLimits)  # token and body size checked before any parsing
    # stream before events: /v1/events/stream is not an event id
    modules = (health, segments, hosts, instances, policies, stream, events, agents,
               subscriptions)
    for module in (*modules, actions, decisions, whatif, controller):
        app.include_router(module.router)
    app.include_router(controller.group_router)
    openapi.install(app, settings)  # errors and limits as the server applies them
    return app
