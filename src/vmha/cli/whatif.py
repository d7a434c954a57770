"""`vmha whatif HOST...` and `vmha whatif --all-single`: what vmha would do.

Asks the controller (`POST /v1/whatif`, `GET /v1/whatif/single-host`) and
prints where each instance would go, what would find no host, and whether
the mass-failure guard would pause the segment. Nothing is changed. Exit
code 0 when the failure would be absorbed, 3 when it would not (so a
maintenance script can stop), 1 for API errors. Talks only to the API.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vmha.cli.client import DEFAULT_URL, AsJson, CliError, Token, Url, cli_errors, connect
from vmha.cli.output import print_json, print_table

NOT_ABSORBED = 3


@cli_errors
def whatif(
    hosts: Annotated[list[str] | None, typer.Argument(
        metavar="HOST...", help="Hosts that would fail at once.", show_default=False)] = None,
    all_single: Annotated[bool, typer.Option(
        "--all-single", help="Check every single-host failure (N+1).")] = False,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """What would happen if these hosts failed now (nothing is touched).
    Exit code 3 when the failure would not be absorbed."""
    if bool(hosts) == all_single:
        raise CliError("name the hosts that would fail, or use --all-single", code=2)
    with connect(url, token) as api:
        if all_single:
            out = api.get("/v1/whatif/single-host")
            absorbed = bool(out["all_absorbed"])
        else:
            out = api.post("/v1/whatif", {"fail": hosts})
            absorbed = bool(out["absorbed"])
    if as_json:
        print_json(out)
    elif all_single:
        _print_single(out)
    else:
        _print_one(out)
    if not absorbed:
        raise typer.Exit(NOT_ABSORBED)


def _print_one(out: dict[str, Any]) -> None:
    print_table(out["instances"], [
        ("INSTANCE", lambda r: r["name"]), ("FROM", lambda r: r["source"]),
        ("ACTION", lambda r: r["action"]), ("TO", lambda r: r["target"]),
        ("PRIORITY", lambda r: r["priority"]), ("WHY", lambda r: r["reason"]),
    ])
    for seg in out["segments"]:
        typer.echo(f"segment {seg['segment']}: {seg['reason']}")
    if out["isolated"]:
        typer.echo("every host would look down: the controller would assume it is cut "
                   "off and fence nothing")
    for note in out["notes"]:
        typer.echo(f"note: {note}")
    failed = ", ".join(out["failed"])
    typer.echo(f"{failed}: {'absorbed' if out['absorbed'] else 'NOT absorbed'}")


def _print_single(out: dict[str, Any]) -> None:
    print_table(out["hosts"], [
        ("HOST", lambda r: r["host"]), ("SEGMENT", lambda r: r["segment"]),
        ("ABSORBED", lambda r: r["absorbed"]), ("MOVED", lambda r: r["moved"]),
        ("UNPLACEABLE", lambda r: len(r["unplaceable"])),
        ("NOT RECOVERED", lambda r: r["not_recovered"]), ("WHY NOT", lambda r: r["reason"]),
    ])
    verdict = "every single-host failure is absorbed" if out["all_absorbed"] else \
        "NOT every single-host failure is absorbed"
    typer.echo(verdict)
