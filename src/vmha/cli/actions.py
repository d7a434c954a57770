"""`vmha instance action ID ACTION [--host H]` and `vmha decide TOKEN ACTION`.

Both go through the REST API (`POST /v1/instances/{id}/actions`,
`POST /v1/decisions`, the token in the body) and print the job that carries the action
out (follow it with `vmha job show ID`). Talks only to the API.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from vmha.cli.client import DEFAULT_URL, AsJson, Token, Url, cli_errors, connect
from vmha.cli.output import print_json

ACTIONS = "restart, reset, stop, start, evacuate, rebuild, ignore"


def _job_line(job: dict[str, Any]) -> str:
    return f"job {job['id']} ({job['kind']}) {job['state']}: {job['reason']}"


@cli_errors
def instance_action(
    instance_id: str,
    action: Annotated[str, typer.Argument(help=f"One of {ACTIONS}.")],
    host: Annotated[str | None, typer.Option("--host", help="evacuate: the target host.")]
    = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Run an action on an instance (as a job); refused actions say why."""
    body: dict[str, Any] = {"action": action}
    if host is not None:
        body["host"] = host
    with connect(url, token) as api:
        job = api.post(f"/v1/instances/{quote(instance_id, safe='')}/actions", body)
    if as_json:
        print_json(job)
        return
    typer.echo(_job_line(job))
    typer.echo(f"follow it with: vmha job show {job['id']}")


@cli_errors
def decide(
    decision_token: Annotated[str, typer.Argument(
        metavar="TOKEN", help="The token of the decision.requested event.")],
    action: Annotated[str, typer.Argument(help="One of the event's allowed actions.")],
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Answer a custom decision before its deadline."""
    with connect(url, token) as api:
        out = api.post("/v1/decisions", {"token": decision_token, "action": action})
    if as_json:
        print_json(out)
        return
    typer.echo(f"decision {out['decision']['id']}: {out['decision']['reason']}")
    if out.get("job"):
        typer.echo(_job_line(out["job"]))
        typer.echo(f"follow it with: vmha job show {out['job']['id']}")
