"""`vmha event list|tail` and `vmha job list|show`, through the REST API.

`event tail` follows the Server-Sent Events stream (`vmha.cli.tail`):
one line per event as it commits, reconnecting with `Last-Event-ID`
after a drop, until Ctrl-C or `--count` events. Talks only to the API.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer

from vmha.api.routes.common import EVENT_ID_MAX
from vmha.cli.client import DEFAULT_URL, ApiClient, AsJson, Token, Url, cli_errors, connect
from vmha.cli.output import Column, field, print_json, print_page, print_table, when
from vmha.cli.tail import EventTail

event_app = typer.Typer(help="Events: what happened, in order.", no_args_is_help=True)
job_app = typer.Typer(help="Recovery jobs and their steps.", no_args_is_help=True)

Types = Annotated[list[str] | None, typer.Option(
    "--type", help="Event type, or a prefix ending in '*'; repeatable.")]


def event_line(event: dict[str, Any]) -> str:
    """`#12 2026-11-24T08:43:44Z host.maintenance_on host/h1 [info] reason=...`"""
    payload = event.get("payload") or {}
    extras = " ".join(
        f"{k}={v}" for k, v in payload.items() if k in ("reason", "from", "to", "by") and v
    )
    project = f" project={event['project']}" if event.get("project") else ""
    return (
        f"#{event['id']} {when(event['time'])} {event['type']} "
        f"{event['subject_kind']}/{event['subject']} [{event['severity']}]{project} {extras}"
    ).rstrip()


def _events(api: ApiClient, since: int, types: list[str], **filters: Any) -> dict[str, Any]:
    params = {"since": since, "type": types, **filters}
    page: dict[str, Any] = api.get("/v1/events", params)
    return page


@event_app.command("list")
@cli_errors
def event_list(
    since: Annotated[int, typer.Option("--since", min=0, max=EVENT_ID_MAX,
                                       help="Only events after this id.")] = 0,
    event_type: Types = None,
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    project: Annotated[str | None, typer.Option("--project")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """List events (oldest first)."""
    with connect(url, token) as api:
        page = _events(api, since, event_type or [], subject=subject, project=project,
                       limit=limit)
    if as_json:
        print_json(page)
        return
    for event in page["items"]:
        typer.echo(event_line(event))
    if len(page["items"]) == limit:
        typer.echo(f"(more: repeat with --since {page['next_since']})", err=True)


@event_app.command("tail")
@cli_errors
def event_tail(
    event_type: Types = None,
    since: Annotated[int | None, typer.Option(
        "--since", min=0, max=EVENT_ID_MAX,
        help="Start after this id (default: only new events).")] = None,
    count: Annotated[int | None, typer.Option(
        "--count", min=1, help="Exit after printing this many events.")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Print events as they happen (server-sent events), one line each, until
    Ctrl-C; reconnects by itself and resumes after the last printed event."""
    def show(event: dict[str, Any]) -> None:
        typer.echo(print_json_line(event) if as_json else event_line(event))

    with EventTail(url, token, event_type or [], since, show, count) as tail:
        try:
            tail.run()
        except KeyboardInterrupt:
            return


def print_json_line(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


JOB_COLUMNS: list[Column] = [
    ("ID", field("id")), ("KIND", field("kind")), ("SUBJECT", field("subject")),
    ("STATE", field("state")), ("STEPS", lambda row: len(row["steps"])),
    ("CREATED", lambda row: when(row["created_at"])),
    ("UPDATED", lambda row: when(row["updated_at"])), ("REASON", field("reason")),
]
STEP_COLUMNS: list[Column] = [
    ("STEP", field("name")), ("STATE", field("state")),
    ("STARTED", lambda row: when(row["started_at"])),
    ("FINISHED", lambda row: when(row["finished_at"])),
    ("DURATION", lambda row: "-" if row["duration_s"] is None else f"{row['duration_s']:.3f}s"),
    ("DETAIL", field("detail")),
]


@job_app.command("list")
@cli_errors
def job_list(
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    project: Annotated[str | None, typer.Option(
        "--project", help="only the jobs about this project's instances (a project "
        "token sees only its own anyway)")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    marker: Annotated[str | None, typer.Option("--marker")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """List recovery jobs (oldest first)."""
    params = {"kind": kind, "state": state, "subject": subject, "project": project,
              "limit": limit, "marker": marker}
    with connect(url, token) as api:
        print_page(api.get("/v1/jobs", params), JOB_COLUMNS, as_json)


@job_app.command("show")
@cli_errors
def job_show(
    job_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Show a job with every step and its timing."""
    with connect(url, token) as api:
        job = api.get(f"/v1/jobs/{quote(job_id, safe='')}")
    if as_json:
        print_json(job)
        return
    typer.echo(
        f"job {job['id']} ({job['kind']}) on {job['subject']}: {job['state']}, "
        f"generation {job['generation']}, created {when(job['created_at'])}, "
        f"updated {when(job['updated_at'])}"
    )
    if job["reason"]:
        typer.echo(f"reason: {job['reason']}")
    print_table(job["steps"], STEP_COLUMNS)
