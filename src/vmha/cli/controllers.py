"""`vmha controller list`: the controllers' group, as the one asked sees it.

Members (name, API URL, heartbeat address, how many registered hosts its
share on the hash ring has and how many of them it last reported silent),
which one leads the recovery engine, and the coordination health of the
controller that answered: its leader epoch, lease, and how long ago its
last round with etcd was. Reads `GET /v1/controllers` (a viewer token is
enough); `--json` prints the answer as it is.
"""

from __future__ import annotations

from vmha.cli.client import DEFAULT_URL, AsJson, Token, Url, cli_errors, connect
from vmha.cli.output import console, print_json, print_table


@cli_errors
def controller_list(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
                    ) -> None:
    """The controllers, their leader and the coordination health."""
    data = connect(url, token).get("/v1/controllers")
    if as_json:
        print_json(data)
        return
    print_table(data["members"], [
        ("NAME", lambda m: m["name"]), ("LEADER", lambda m: "yes" if m["leader"] else ""),
        ("API", lambda m: m["api_url"]), ("HEARTBEAT", lambda m: m["heartbeat"]),
        ("HOSTS", lambda m: str(m.get("owned_hosts", "-"))),
        ("SILENT", lambda m: "-" if m.get("silent_hosts") is None else str(m["silent_hosts"])),
    ])
    health = "healthy" if data["healthy"] else f"UNREACHABLE: {data['error']}"
    age = data.get("round_age_s")
    console.print(f"answered by {data['self']} ({data['coordination']}: {health}; "
                  f"lease {data['lease_s']:g} s; last round "
                  f"{'-' if age is None else f'{age:.1f} s'} ago; "
                  f"leader {data['leader'] or 'none'}"
                  + (f", epoch {data['epoch']})" if data["epoch"] else ")"))
