"""`vmha status`: one screen on the state of the cluster.

The controller (ready or not), each segment (paused or not, hosts by
state), the hosts that are not up with why, recovery jobs running and
custom decisions waiting for an answer. Reads only the API (a viewer token
is enough); `--json` prints the same summary as one object. Exit code 0
when the controller is ready and no segment is paused, 3 otherwise, 1 when
the API cannot be reached.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import typer

from vmha.cli.client import (
    DEFAULT_URL,
    ApiClient,
    AsJson,
    CliError,
    Token,
    Url,
    cli_errors,
    connect,
)
from vmha.cli.output import print_json, print_table, when

ATTENTION = 3
RUNNING_STATES = ("pending", "fencing", "fenced", "evacuating", "verifying", "paused")


def _all(api: ApiClient, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    marker = None
    while True:
        page = api.get(path, {**params, "limit": 100, "marker": marker})
        yield from page["items"]
        marker = page.get("next_marker")
        if not marker:
            return


def _ready(api: ApiClient) -> str:
    try:
        return str(api.get("/readyz")["status"])
    except CliError as exc:
        if exc.message.startswith("503"):
            return f"not ready: {exc.message}"
        raise


def summary(api: ApiClient) -> dict[str, Any]:
    segments = list(_all(api, "/v1/segments"))
    hosts = list(_all(api, "/v1/hosts"))
    jobs = [j for state in RUNNING_STATES for j in _all(api, "/v1/jobs", state=state)]
    by_segment: dict[str, Counter[str]] = {s["name"]: Counter() for s in segments}
    for h in hosts:
        by_segment.setdefault(h["segment"], Counter())[h["state"]] += 1
    return {
        "controller": {"url": api.url, "ready": _ready(api)},
        "segments": [{"name": s["name"], "paused": s.get("recovery_paused", False),
                      "paused_reason": s.get("paused_reason", ""),
                      "hosts": dict(by_segment[s["name"]])} for s in segments],
        "hosts_by_state": dict(Counter(h["state"] for h in hosts)),
        "hosts_not_up": [{k: h[k] for k in ("name", "segment", "state", "state_reason",
                                            "state_since", "heartbeat_age_s")}
                         for h in hosts if h["state"] != "up"],
        "jobs_running": [{k: j[k] for k in ("id", "kind", "subject", "state", "reason",
                                            "created_at")}
                         for j in jobs if j["kind"] != "decision"],
        "decisions_pending": [{"id": j["id"], "subject": j["subject"], "reason": j["reason"]}
                              for j in jobs if j["kind"] == "decision"],
    }


@cli_errors
def status(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """One screen: controller, segments, hosts by state, jobs, decisions.
    Exit code 3 when the controller is not ready or a segment is paused."""
    with connect(url, token) as api:
        out = summary(api)
    if as_json:
        print_json(out)
    else:
        _print(out)
    if out["controller"]["ready"] != "ready" or any(s["paused"] for s in out["segments"]):
        raise typer.Exit(ATTENTION)


def _print(out: dict[str, Any]) -> None:
    c = out["controller"]
    typer.echo(f"controller {c['url']}: {c['ready']}")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(out["hosts_by_state"].items()))
    typer.echo(f"hosts: {counts or 'none'}")
    for seg in out["segments"]:
        hosts = ", ".join(f"{n} {st}" for st, n in sorted(seg["hosts"].items())) or "no hosts"
        flag = f"  RECOVERY PAUSED: {seg['paused_reason']}" if seg["paused"] else ""
        typer.echo(f"segment {seg['name']}: {hosts}{flag}")
    if out["hosts_not_up"]:
        print_table(out["hosts_not_up"], [
            ("HOST", lambda r: r["name"]), ("SEGMENT", lambda r: r["segment"]),
            ("STATE", lambda r: r["state"]), ("SINCE", lambda r: when(r["state_since"])),
            ("WHY", lambda r: r["state_reason"])], title="hosts not up")
    if out["jobs_running"]:
        print_table(out["jobs_running"], [
            ("JOB", lambda r: r["id"]), ("KIND", lambda r: r["kind"]),
            ("SUBJECT", lambda r: r["subject"]), ("STATE", lambda r: r["state"]),
            ("REASON", lambda r: r["reason"])], title="jobs running")
    typer.echo(f"jobs running: {len(out['jobs_running'])}, "
               f"decisions pending: {len(out['decisions_pending'])}")
    for d in out["decisions_pending"]:
        typer.echo(f"  decision {d['id']} on {d['subject']}: {d['reason']}")
