"""The dashboard's pages, served by the controller at `/` and `/ui/...`.

Server-rendered (Jinja2, autoescaped) so every read-only page works
without JavaScript; a few ES modules in `static/` add live updates (the
API's SSE stream, read with the bearer token from the tab's
sessionStorage) and the actions (through the `/v1` API, same token). Pages
are authorized by the session cookie (vmha.web.sessions explains why a
cookie, and why it cannot be used to change anything) or a bearer header.
Nothing here writes the store; every view applies the API's role rules.

`install(app)` adds the routes and the static files to the API app; it is
called by the composition root (vmha.cli.server).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from vmha.api.auth import Permission, Principal
from vmha.api.context import AppContext, context
from vmha.api.inventory import read_inventory
from vmha.config import controller_settings
from vmha.domain.jobs import project_of
from vmha.domain.whatif import what_if
from vmha.errors import NotFound, PermissionDenied, VmhaError
from vmha.web import views
from vmha.web.sessions import COOKIE, SessionTable

log = logging.getLogger("vmha.web")
HERE = Path(__file__).parent
LOGIN_BODY_MAX = 8192
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


class LoginNeeded(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["secs"] = _secs
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def _when(t: float | None) -> str:
    if not t:
        return "-"
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


ENV = _env()


def sessions(request: Request) -> SessionTable:
    table: SessionTable = request.app.state.vmha_sessions
    return table


def viewer(request: Request, ctx: AppContext = Depends(context)) -> views.Who:
    """The logged-in principal (session cookie, else a bearer header)."""
    principal = sessions(request).lookup(request.cookies.get(COOKIE))
    auth = request.headers.get("authorization", "")
    if principal is None and auth.lower().startswith("bearer "):
        principal = ctx.tokens.lookup(auth[7:].strip())
    if principal is None or principal.role == "agent":
        raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query
                                              else ""))
    return views.Who(principal)


def render(request: Request, template: str, status: int = 200, **data: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(request_path=request.url.path, **data)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _require(who: views.Who, *permissions: Permission) -> None:
    for p in permissions:
        if not who.principal.may(p):
            raise PermissionDenied(f"role {who.principal.role!r} may not see this page")


# -- login -------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get("/ui/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = Query(None)) -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error="", who=None)


def _same_origin(request: Request) -> bool:
    """A login or logout must come from our own pages (no login CSRF)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":  # "null": a privacy-restricted origin; see below
        ours = urlsplit(str(request.base_url))
        theirs = urlsplit(origin)
        return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_BODY_MAX:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in fields.items() if v}


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request, ctx: AppContext = Depends(context)) -> Response:
    form = await _form(request)
    nxt = _safe_next(form.get("next"))
    if not _same_origin(request):
        return render(request, "login.html", 403, next=nxt, who=None,
                      error="refused: the login form was sent from another site")
    principal = ctx.tokens.lookup(form.get("token", "").strip())
    if principal is None or principal.role == "agent":
        log.warning("dashboard login refused from %s: %s",
                    request.client.host if request.client else "?",
                    "an agent token" if principal else "not a valid token")
        return render(request, "login.html", 401, next=nxt, who=None,
                      error="That token is not valid for the dashboard.")
    sid = sessions(request).open(principal)
    log.info("dashboard login: %s (%s)", principal.name or principal.role, principal.role)
    response = RedirectResponse(nxt, status_code=303, headers=HEADERS)
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    if _same_origin(request):
        sessions(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- pages -------------------------------------------------------------------


def _live(ctx: AppContext) -> views.Live:
    return lambda host: ctx.liveness_of(host)


@router.get("/", response_class=HTMLResponse)
async def cluster(request: Request, ctx: AppContext = Depends(context),
                  who: views.Who = Depends(viewer)) -> HTMLResponse:
    if not who.cluster:
        project = who.principal.project or ""
        mine = await asyncio.to_thread(views.project_instances, ctx.store, project)
        return render(request, "project.html", who=who, instances=mine, project=project)
    data = await asyncio.to_thread(views.grid, ctx.store, _live(ctx))
    return render(request, "cluster.html", who=who, now=ctx.clock.now(), **data)


@router.get("/ui/instances/{instance_id}", response_class=HTMLResponse)
async def instance_page(instance_id: str, request: Request, ctx: AppContext = Depends(context),
                        who: views.Who = Depends(viewer)) -> HTMLResponse:
    _require(who, Permission.INSTANCES_READ)
    data = await asyncio.to_thread(views.instance, ctx.store, instance_id, who, ctx.clock.now())
    return render(request, "instance.html", who=who, **data)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: str, request: Request, ctx: AppContext = Depends(context),
                   who: views.Who = Depends(viewer)) -> HTMLResponse:
    _require(who, Permission.JOBS_READ)
    job = await asyncio.to_thread(ctx.store.get_job, job_id)
    project = who.principal.project
    if project is not None and project_of(job.kind, job.data) != project:
        raise NotFound("job", job_id)  # another project's, or a host's: as if missing
    return render(request, "job.html", who=who, **views.job_view(job))


@router.get("/ui/events", response_class=HTMLResponse)
async def events_page(
    request: Request, type_: str = Query("", alias="type", max_length=100),
    subject: str = Query("", max_length=200), severity: str = Query("", max_length=20),
    ctx: AppContext = Depends(context), who: views.Who = Depends(viewer),
) -> HTMLResponse:
    _require(who, Permission.EVENTS_READ)
    types = tuple(t for t in (type_.strip(),) if t)
    sev = severity if severity in ("info", "warning", "error", "critical") else None
    rows = await asyncio.to_thread(views.feed, ctx.store, who, types, subject.strip() or None,
                                   sev)
    return render(request, "events.html", who=who, events=rows,
                  filters={"type": type_, "subject": subject, "severity": sev or ""})


@router.get("/ui/whatif", response_class=HTMLResponse)
async def whatif_page(request: Request, fail: list[str] = Query([], max_length=100),
                      ctx: AppContext = Depends(context),
                      who: views.Who = Depends(viewer)) -> HTMLResponse:
    _require(who, Permission.HOSTS_READ, Permission.INSTANCES_READ)
    inv = await asyncio.to_thread(read_inventory, ctx.store)
    unknown = [h for h in fail if h not in inv.hosts]
    if unknown or not fail:
        raise NotFound("host", ", ".join(unknown) or "(none named)")
    window = controller_settings(ctx.settings).mass_failure_window_s
    result = what_if(inv, fail, ctx.clock.now(), window)
    return render(request, "whatif.html", who=who, result=result)


# -- wiring ------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Add the dashboard to the API app (after `create_app`)."""
    ctx: AppContext = app.state.vmha
    app.state.vmha_sessions = SessionTable(ctx.clock)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.exception_handler(LoginNeeded)
    async def to_login(request: Request, exc: LoginNeeded) -> Response:
        target = "/ui/login?next=" + quote(exc.next_path, safe="")
        return RedirectResponse(target, status_code=303, headers=HEADERS)

    api_errors = app.exception_handlers[VmhaError]

    async def page_or_problem(request: Request, exc: Exception) -> Response:
        """Dashboard pages show errors as a page; the API keeps problem+json."""
        path = request.url.path
        if isinstance(exc, VmhaError) and (path == "/" or path.startswith("/ui/")):
            return render(request, "error.html", exc.status, who=None, title=exc.title,
                          detail=exc.detail)
        answer: Response = api_errors(request, exc)
        return answer

    app.add_exception_handler(VmhaError, page_or_problem)


def principal_name(p: Principal) -> str:
    return p.name or (f"project:{p.project}" if p.project else p.role)


ENV.globals["principal_name"] = principal_name
