"""`vmha agent --config agent.toml`: run the host agent.

A typer front of `vmha.agent.main.main` (which the lab runs directly as
`python -m vmha.agent`). Exit 2 on a configuration error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vmha.agent.main import main as agent_main

app = typer.Typer(help="The vmha host agent.", invoke_without_command=True)


@app.callback()
def agent(
    config: Annotated[str, typer.Option("--config", help="Agent TOML file.")],
    log_level: Annotated[str, typer.Option(help="debug, info or warning.")] = "info",
    log_format: Annotated[str, typer.Option(
        help="text, or json (one JSON object per line).")] = "text",
) -> None:
    """Send heartbeats, answer probes, self-fence when isolated."""
    code = agent_main(["--config", config, "--log-level", log_level,
                       "--log-format", log_format])
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
