"""`vmha sim run`: exit codes, log and JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vmha.cli import sim as cli_sim
from vmha.cli.sim import app
from vmha.sim.runner import run_scenario

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def test_a_bad_scenario_is_one_line_on_stderr_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "scenario.yaml"
    bad.write_text("segments: {s1: {}}\nhosts: {h1: {segment: s1}}\n"
                   "commands: [{at: 3, do: powr-off h1}]\n")
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "commands[0].do: unknown command 'powr-off h1'; allowed: power-off H" in lines[0]


def test_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read the scenario file" in result.stderr


def test_log_and_json_of_a_scenario() -> None:
    path = str(SCENARIOS / "host-power-off" / "scenario.yaml")
    log = CliRunner().invoke(app, ["run", path, "--until", "60"])
    assert log.exit_code == 0, log.stderr
    assert "  30.000  h1: inject power-off" in log.stdout.splitlines()
    out = CliRunner().invoke(app, ["run", path, "--json", "--until", "60", "--seed", "5"])
    assert out.exit_code == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["end_time"] == 60.0
    assert set(report) >= {"hosts", "instances", "events", "invariants", "metrics"}
    assert report["invariants"] == {"never_running_twice": True,
                                    "no_recovery_before_fence": True,
                                    "no_fence_while_paused": True,
                                    "no_fence_of_a_healthy_host": True,
                                    "no_fence_in_a_mass_outage": True}
    assert report["hosts"]["h1"]["powered"] is False
    assert "h1" in report["metrics"]["detect_s"]


def test_a_broken_invariant_is_exit_1_and_named(
        monkeypatch: pytest.MonkeyPatch, reckless_engine: Any) -> None:
    def reckless(scenario: Any, seed: Any = None, until: Any = None) -> Any:
        return run_scenario(scenario, seed=seed, until=until, engine=reckless_engine)

    monkeypatch.setattr(cli_sim, "run_scenario", reckless)
    path = str(SCENARIOS / "network-isolation" / "scenario.yaml")
    result = CliRunner().invoke(app, ["run", path, "--until", "60"])
    assert result.exit_code == 1
    assert "invariant broken: never_running_twice" in result.stderr
    assert "INVARIANT never_running_twice broken" in result.stdout


def test_a_bad_controller_setting_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "scenario.yaml"
    bad.write_text("config: {heartbeat_intervall_s: 1}\nsegments: {s1: {}}\n"
                   "hosts: {h1: {segment: s1}}\n")
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert "config.heartbeat_intervall_s: unknown controller setting" in result.stderr
