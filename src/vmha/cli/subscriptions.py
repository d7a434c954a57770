"""`vmha subscription create|list|show|delete|deliveries|redeliver`:
webhook subscriptions through the REST API.

`create` without `--secret` generates a random secret and prints it once:
the API never shows it again (receivers need it to check the
Vmha-Signature header). Talks only to the API.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

import typer

from vmha.cli.client import DEFAULT_URL, AsJson, Token, Url, cli_errors, connect
from vmha.cli.output import Column, field, print_json, print_record, print_table, when

subscription_app = typer.Typer(
    help="Webhook subscriptions: where events are POSTed, and their deliveries.",
    no_args_is_help=True,
)

COLUMNS: list[Column] = [
    ("ID", field("id")), ("URL", field("url")),
    ("TYPES", lambda row: ",".join(row["event_types"])),
    ("PROJECT", field("project")), ("SUBJECT", field("subject")),
    ("CURSOR", field("cursor")),
]
DELIVERY_COLUMNS: list[Column] = [
    ("EVENT", field("event_id")), ("STATUS", field("status")),
    ("ATTEMPTS", field("attempts")), ("UPDATED", lambda row: when(row["updated_at"])),
    ("LAST ERROR", field("last_error")),
]


def _path(subscription_id: str) -> str:
    return f"/v1/subscriptions/{quote(subscription_id, safe='')}"


@subscription_app.command("create")
@cli_errors
def create(
    target: Annotated[str, typer.Argument(help="The webhook URL (http or https).")],
    event_type: Annotated[list[str], typer.Option(
        "--type", help="Event type or prefix ending in '*'; repeatable.")],
    secret: Annotated[str | None, typer.Option(
        "--secret", help="HMAC secret (16+ chars); generated when omitted.")] = None,
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    project: Annotated[str | None, typer.Option("--project")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Subscribe a webhook URL to events."""
    key = secret or secrets.token_hex(24)
    body = {"url": target, "event_types": event_type, "secret": key,
            "subject": subject, "project": project}
    with connect(url, token) as api:
        created = api.post("/v1/subscriptions", {k: v for k, v in body.items() if v})
    if as_json:
        print_json(created)
    else:
        print_record(created)
    if secret is None:
        typer.echo(f"secret: {key}  (shown once; receivers verify Vmha-Signature with it)",
                   err=True)


@subscription_app.command("list")
@cli_errors
def list_(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List webhook subscriptions."""
    with connect(url, token) as api:
        page = api.get("/v1/subscriptions")
    if as_json:
        print_json(page)
    else:
        print_table(page["items"], COLUMNS)


@subscription_app.command("show")
@cli_errors
def show(subscription_id: str, url: Url = DEFAULT_URL, token: Token = None,
         as_json: AsJson = False) -> None:
    """Show one subscription (the secret is never shown)."""
    with connect(url, token) as api:
        sub = api.get(_path(subscription_id))
    if as_json:
        print_json(sub)
    else:
        print_record(sub)


@subscription_app.command("delete")
@cli_errors
def delete(subscription_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete a subscription and its delivery records."""
    with connect(url, token) as api:
        api.delete(_path(subscription_id))
    typer.echo(f"subscription {subscription_id} deleted")


@subscription_app.command("deliveries")
@cli_errors
def deliveries(
    subscription_id: str,
    status: Annotated[str | None, typer.Option(
        "--status", help="delivered, retrying, dead or redeliver")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Recent deliveries of a subscription, newest first (dead letters included)."""
    with connect(url, token) as api:
        page = api.get(f"{_path(subscription_id)}/deliveries",
                       {"status": status, "limit": limit})
    if as_json:
        print_json(page)
        return
    typer.echo(f"subscription {page['subscription']}: cursor at event {page['cursor']}")
    print_table(page["items"], DELIVERY_COLUMNS)


@subscription_app.command("redeliver")
@cli_errors
def redeliver(subscription_id: str, event_id: int, url: Url = DEFAULT_URL,
              token: Token = None) -> None:
    """Send a dead letter again."""
    with connect(url, token) as api:
        api.post(f"{_path(subscription_id)}/deliveries/{event_id}/redeliver", {})
    typer.echo(f"event {event_id} queued for redelivery to subscription {subscription_id}")
