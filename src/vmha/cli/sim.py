"""`vmha sim`: run a scenario in the deterministic simulator.

`vmha sim run SCENARIO.yaml [--seed N] [--json] [--until SECONDS]` prints
the log (see `vmha.sim.log` for the line format) or, with `--json`, one JSON
object (end_time, hosts, instances, events, invariants, metrics).

Exit codes: 0 all invariants hold; 1 an invariant was broken (named on
stderr) or the simulated controller crashed; 2 the scenario is invalid
(one line on stderr naming the key). The lead mounts `app` as `vmha sim`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from vmha.errors import ValidationError
from vmha.sim.runner import SimulationError, run_scenario
from vmha.sim.scenario import load_scenario

app = typer.Typer(help="Deterministic simulation of the HA controller.", no_args_is_help=True)


@app.callback()
def _sim() -> None:
    """Deterministic simulation of the HA controller (virtual time)."""


@app.command("run")
def run(
    scenario: Path = typer.Argument(..., help="the scenario YAML file"),
    seed: int | None = typer.Option(None, "--seed", help="override the scenario's seed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    until: float | None = typer.Option(
        None, "--until", min=0.0, help="stop at this virtual time (default: last command + 300 s)"
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="also show the controller's own log records on stderr"
    ),
) -> None:
    """Run SCENARIO on a virtual clock and print what happened."""
    # The controller's log records repeat what the events say; keep stderr
    # for errors unless asked (and put the level back: tests run in-process).
    logger = logging.getLogger("vmha")
    old_level = logger.level
    logger.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
    if verbose:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    try:
        parsed = load_scenario(scenario)
        result = run_scenario(parsed, seed=seed, until=until)
    except ValidationError as exc:
        print(f"error: {scenario}: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    except SimulationError as exc:
        print(f"error: the simulated controller failed: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        logger.setLevel(old_level)
    if as_json:
        print(json.dumps(result.report, indent=1, sort_keys=False))
    else:
        print("\n".join(result.lines))
    broken = [name for name, ok in result.report["invariants"].items() if not ok]
    if broken:
        for v in result.report["violations"]:
            print(f"invariant broken: {v['invariant']} at {v['t']:.3f} s: {v['subject']}: "
                  f"{v['what']}", file=sys.stderr)
        raise typer.Exit(1)
