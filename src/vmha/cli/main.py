"""The `vmha` command line: the typer `app` and the console script `main`.

Server-side commands (`serve`, `db`, `config`) read the configuration;
client commands (`segment`, `host`, `instance`, `policy`, `event`, `job`)
talk to a running controller's REST API (`--url`/`VMHA_URL`,
`--token`/`VMHA_TOKEN`, `--json`). Errors are one line on stderr: exit 1
for API and connection errors, 2 for a bad configuration.
"""

from __future__ import annotations

import typer

from vmha.cli import (
    actions,
    agent,
    controllers,
    demo,
    feed,
    lab,
    resources,
    server,
    sim,
    status,
    subscriptions,
    whatif,
)

app = typer.Typer(
    name="vmha",
    help="vmha keeps virtual machines running: controller, API client and tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.command("serve")(server.serve)
app.add_typer(server.db_app, name="db")
app.add_typer(server.config_app, name="config")
app.add_typer(resources.segment_app, name="segment")
app.add_typer(resources.host_app, name="host")
app.add_typer(resources.instance_app, name="instance")
app.add_typer(resources.policy_app, name="policy")
app.add_typer(feed.event_app, name="event")
app.add_typer(feed.job_app, name="job")
app.add_typer(subscriptions.subscription_app, name="subscription")
resources.instance_app.command("action")(actions.instance_action)
app.command("decide")(actions.decide)
app.command("whatif")(whatif.whatif)
app.command("status")(status.status)
controller_app = typer.Typer(help="The controllers of a several-controller deployment.",
                             no_args_is_help=True)
controller_app.command("list")(controllers.controller_list)
app.add_typer(controller_app, name="controller")

app.command("demo")(demo.demo)
app.add_typer(sim.app, name="sim", help="Run HA scenarios in the deterministic simulator.")
app.add_typer(agent.app, name="agent")
app.add_typer(lab.app, name="lab")


def main() -> None:
    app()
