"""Scenario tests: every tests/scenarios/<name>/ is run in the simulator.

For each directory: the log must equal `expected.log` line by line (a
unified diff is shown otherwise; `pytest --update-golden` rewrites it),
every safety invariant must hold, and the outcome described in its
README must be visible in the run (OUTCOMES below: events that must or
must not appear, where instances end up, how often each was started).
The outcome checks keep a golden file from silently recording wrong
behaviour. Scenarios in XFAIL (right behaviour not shown yet) have no
golden file and are checked on invariants and outcome only.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vmha.sim.runner import RunResult, run_scenario
from vmha.sim.scenario import load_scenario

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Outcome:
    has: tuple[str, ...] = ()  # "type subject" events that must be stored
    lacks: tuple[str, ...] = ()  # "type" or "type subject" events that must not
    # instance -> where it runs at the end: a host, None (nowhere), "not:h1",
    # "in:h2,h3"
    running: Mapping[str, str | None] = field(default_factory=dict)
    starts: Mapping[str, int] = field(default_factory=dict)  # world starts per instance
    never: tuple[str, ...] = ()  # substrings no log line may contain
    log_has: tuple[str, ...] = ()  # substrings some log line must contain
    # (a, b): the first line containing a comes before the first containing b
    before: tuple[tuple[str, str], ...] = ()


FENCED_H1 = ("host.failed h1", "host.fenced h1")
OUTCOMES: dict[str, Outcome] = {
    "host-power-off": Outcome(
        has=("host.suspect h1", *FENCED_H1), lacks=("host.failed h2", "host.failed h3"),
        running={"vm1": "not:h1", "vm2": "not:h1", "vm3": "h2", "vm4": "h3", "vm5": None},
        starts={"vm1": 1, "vm2": 1, "vm5": 0}),
    "bmc-unreachable-self-fence": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1},
        before=(("h1: world powered off (self-fenced", "h1: host.fenced"),)),
    "bmc-stuck-on": Outcome(
        has=("host.failed h1", "host.fence_failed h1"),
        lacks=("host.fenced h1", "instance.evacuated", "instance.evacuating"),
        running={"vm1": None, "vm2": None}, starts={"vm1": 0, "vm2": 0}),
    "bmc-stuck-on-operator-ack": Outcome(
        has=("host.fence_failed h1", "host.fenced h1"),
        running={"vm1": "not:h1", "vm2": "not:h1"}, starts={"vm1": 1, "vm2": 1}),
    "operator-fence": Outcome(
        has=("host.failed h1", "host.fenced h1"), lacks=("host.fence_failed",),
        running={"vm1": "not:h1", "vm2": "not:h1", "vm3": "h2"}, starts={"vm1": 1, "vm2": 1},
        log_has=("host.failed operator admin requested a fence",),
        before=(("h1: host.fenced", "instance.evacuating"),)),
    "operator-fence-bmc-stuck-on": Outcome(
        has=("host.fence_failed h1",),
        lacks=("host.fenced", "instance.evacuating", "instance.evacuated"),
        running={"vm1": "h1", "vm2": "h2"}, starts={"vm1": 0},
        log_has=("still answers: left up, nothing was moved",)),
    "fence-ack-refused-while-reachable": Outcome(
        has=("host.fence_acked h1", "host.fenced h1"),
        running={"vm1": "not:h1"}, starts={"vm1": 1},
        log_has=("controller refused 'operator fence-ack h1'",
                 "2 of 2 peers still reach it"),
        before=(("power-off", "host.fence_acked"),)),
    "controller-link-cut": Outcome(
        has=("host.suspect h1", "host.partitioned h1", "host.up h1"),
        lacks=("host.failed", "host.fencing", "host.fenced"),
        running={"vm1": "h1", "vm2": "h1"}, never=("powered off",)),
    "network-isolation": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}, never=("self-fenced",)),
    "lossy-network-10min": Outcome(
        lacks=("host.suspect", "host.failed", "host.fenced", "instance.evacuating"),
        running={"vm1": "h1", "vm2": "h1", "vm3": "h2", "vm4": "h3"},
        never=("powered off",)),
    "lossy-onset": Outcome(
        lacks=("host.failed", "host.fencing", "host.fenced", "instance.evacuating"),
        running={"vm1": "h1", "vm2": "h1", "vm3": "h2", "vm4": "h3"},
        never=("powered off",)),
    "mass-failure-operator-resume": Outcome(
        has=("segment.recovery_paused s1", "segment.recovery_resumed s1", "host.fenced h1",
             "host.fenced h2", "host.fenced h3"),
        running={"vm1": "in:h4,h5", "vm2": "in:h4,h5", "vm3": "in:h4,h5", "vm4": "h4"},
        before=(("s1: inject resume", "bmc accepted"), ("s1: inject resume", "host.fenced"))),
    "paused-segment-recovers-proven-dead": Outcome(
        has=("segment.recovery_paused s1", "host.fenced h1", "host.fenced h2",
             "host.fenced h3"),
        running={"vm1": "in:h4,h5", "vm2": "in:h4,h5", "vm3": "in:h4,h5", "vm4": "h4"},
        never=("bmc accepted",),
        log_has=("h1: host.fenced ipmi reads power off (no power-off sent",),
        before=(("vm1: instance.evacuating", "s1: segment.recovery_resumed"),
                ("s1: segment.recovery_paused", "h1: host.fenced"))),
    "mass-failure-auto-resume": Outcome(
        has=("segment.recovery_paused s1", "segment.recovery_resumed s1", "host.up h1"),
        lacks=("host.fencing", "host.fenced"),
        running={"vm1": "h1", "vm2": "h2", "vm4": "h4"}, never=("powered off",)),
    "flapping-host": Outcome(
        lacks=("host.failed", "host.fencing", "host.fenced"),
        running={"vm1": "h1", "vm2": "h1"}, never=("powered off",)),
    "second-host-fails-during-recovery": Outcome(
        has=(*FENCED_H1, "host.fenced h2"),
        running={"vm1": "in:h3,h4,h5", "vm2": "in:h3,h4,h5", "vm3": "in:h3,h4,h5"}),
    "target-fails-mid-evacuation": Outcome(
        has=(*FENCED_H1, "host.fenced h2"), running={"vm1": "in:h3,h4,h5"}),
    "controller-restart-mid-job": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}),
    "not-enough-capacity": Outcome(
        has=(*FENCED_H1, "instance.unplaceable bronze", "instance.unplaceable lead"),
        running={"gold": "in:h2,h3", "silver": "in:h2,h3", "bronze": None, "lead": None},
        starts={"bronze": 0, "lead": 0}),
    "reserved-host-segment": Outcome(
        has=FENCED_H1, running={"vm1": "h3", "vm2": "h3", "vm3": "h2"}),
    "host-returns-after-power-cycle": Outcome(
        has=(*FENCED_H1, "host.up h1"), running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}),
    "maintenance-host": Outcome(
        has=("host.maintenance_on h1", "host.maintenance_off h1"),
        lacks=("host.failed", "host.fencing", "host.fenced"),
        never=("bmc accepted",)),
    "guest-panic-budget-spent": Outcome(
        has=("instance.crashed vm1", "instance.restarted vm1", "instance.recovery_failed vm1"),
        running={"vm1": None}, starts={"vm1": 2}),
    "app-fail-notify": Outcome(
        has=("instance.app_failed vm1",), lacks=("instance.restarted",),
        running={"vm1": "h1"}, never=("vm1: world reset", "vm1: world running on")),
    "guest-hang-watchdog-reset": Outcome(
        has=("instance.watchdog vm1", "instance.watchdog vm2"),
        lacks=("instance.restarted",), running={"vm1": "h1", "vm2": "h2"}),
    "vm-crash-restart": Outcome(
        has=("instance.crashed vm1", "instance.restarted vm1"),
        lacks=("host.suspect", "host.failed"), running={"vm1": "h1"}, starts={"vm1": 1}),
    "agent-crash": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}, before=(("h1: world powered off", "h1: host.fenced"),)),
    "agent-restart-blip": Outcome(
        lacks=("host.failed", "host.fencing", "host.fenced"),
        running={"vm1": "h1", "vm2": "h1"}, never=("powered off",)),
    "cloud-fails-accepted-move": Outcome(
        has=(*FENCED_H1, "instance.evacuated vm1"), lacks=("instance.recovery_failed",),
        running={"vm1": "h3", "vm2": "h3"}, starts={"vm1": 1},
        log_has=("vm1: instance.evacuating moving from h1 to h2",
                 "vm1: world move to h2 accepted, then failed there",
                 "vm1: instance.evacuating moving from h1 to h3"),
        never=("vm1: world running on h2",),
        before=(("move to h2 accepted, then failed", "moving from h1 to h3"),)),
    "cloud-fails-every-move": Outcome(
        has=(*FENCED_H1, "instance.recovery_failed vm1"),
        lacks=("instance.unplaceable", "instance.evacuated"),
        running={"vm1": None, "vm2": "h3"}, starts={"vm1": 0},
        log_has=("vm1: instance.evacuating moving from h1 to h2",
                 "vm1: instance.evacuating moving from h1 to h3",
                 "vm1: instance.recovery_failed 2 moves failed"),
        before=(("move to h3 accepted, then failed", "vm1: instance.recovery_failed"),)),
    "cloud-refuses-re-enable": Outcome(
        has=(*FENCED_H1, "host.up h1", "host.fenced h2"),
        running={"vm1": "h3", "vm2": "h3"}, starts={"vm2": 1},
        log_has=("h1: world compute service stays disabled: the cloud refused",
                 "h1: world compute service enabled"),
        before=(("h1: host.up", "h2: host.fenced"), ("vm2: world running on h3",
                                                      "h1: world compute service enabled"),
                ("h1: inject compute ok", "h1: world compute service enabled"))),
    "evacuate-via-cloud-scheduler": Outcome(
        has=(*FENCED_H1, "instance.evacuated vm1", "instance.evacuated vm2"),
        running={"vm1": "h3", "vm2": "h2", "vm3": "h2"}, starts={"vm1": 1, "vm2": 1},
        log_has=("vm1: instance.evacuated now running on h3",
                 "vm2: instance.evacuated now running on h2"),
        before=(("vm1: instance.evacuating", "vm2: instance.evacuating"),)),
    "host-failure-notify": Outcome(
        has=(*FENCED_H1, "instance.host_failed vm2"), lacks=("instance.host_failed vm3",),
        running={"vm1": "in:h2,h3", "vm2": None, "vm3": None}, starts={"vm2": 0, "vm3": 0},
        before=(("h1: host.fenced", "vm2: instance.host_failed"),)),
    "evacuate-to-stopped": Outcome(
        has=FENCED_H1, running={"vm1": None, "vm2": "not:h1"},
        never=("vm1: world running on",)),
    "anti-affinity": Outcome(
        has=FENCED_H1, running={"web1": "h3", "web2": "h2", "db1": "in:h2,h3"}),
    "anti-affinity-per-project": Outcome(
        has=FENCED_H1, lacks=("instance.recovery_failed",),
        running={"web1": "h3", "web2": "h2", "other": "h3"}),
    "controller-cut-off": Outcome(
        has=("controller.isolated controller",), lacks=("host.fencing", "host.fenced"),
        running={"vm1": "h1", "vm2": "h1", "vm3": "h2", "vm4": "h3"},
        never=("powered off", "bmc accepted")),
    "high-latency-link": Outcome(
        lacks=("host.failed", "host.fencing", "host.fenced"),
        running={"vm1": "h1", "vm2": "h1"}, never=("powered off",)),
    "partition-then-power-off": Outcome(
        has=("host.partitioned h1", *FENCED_H1),
        running={"vm1": "not:h1", "vm2": "not:h1"}, starts={"vm1": 1, "vm2": 1}),
    "partition-then-isolation-bmc-down": Outcome(
        has=("host.partitioned h1", *FENCED_H1), running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1},
        before=(("h1: world powered off (self-fenced", "h1: host.fenced"),)),
    "cold-start-failure": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}),
    "lossy-cutoff-self-fence": Outcome(
        has=("segment.recovery_paused s1", "host.failed h0", "host.fenced h0"),
        lacks=("host.failed h1", "host.fenced h1"),
        running={"vm0": "h2", "vm1": "h1", "vm2": "h2"}, starts={"vm0": 1},
        never=("INVARIANT", "self-fence deadline passed"),
        log_has=("h0: host.fenced ipmi reads power off",),
        before=(("h0: inject network down", "h0: world powered off"),
                ("h0: world powered off", "h0: host.fenced"),
                ("h0: host.fenced", "vm0: instance.evacuating"))),
    "lossy-link-self-fence-sampled": Outcome(
        has=("host.failed h0", "host.fence_failed h0", "host.fenced h0"),
        running={"vm0": "h1", "vm1": "h1", "vm2": "h2"}, starts={"vm0": 1},
        never=("INVARIANT",),
        log_has=("h0: host.fenced agent self-fence deadline passed",),
        before=(("h0: host.fence_failed", "h0: inject network down"),
                ("h0: world powered off", "h0: host.fenced"),
                ("h0: host.fenced", "vm0: instance.evacuating"))),
    "maintenance-during-fence": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "h2"}, starts={"vm1": 1},
        never=("INVARIANT",), log_has=("refused 'maintenance h1 on'",)),
    "cold-start-no-bmc": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}),
    "controller-restart-then-power-off": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}),
    "controller-restart-while-paused": Outcome(
        before=(("s1: inject resume", "bmc accepted"), ("s1: inject resume", "host.fenced")),
        has=("segment.recovery_paused s1", "segment.recovery_resumed s1", "host.fenced h1",
             "host.fenced h2", "host.fenced h3"),
        running={"vm1": "in:h4,h5", "vm2": "in:h4,h5", "vm3": "in:h4,h5"}),
    "agent-crash-bmc-unreachable": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        starts={"vm1": 1, "vm2": 1}, never=("bmc accepted",),
        before=(("h1: world powered off (self-fenced", "h1: host.fenced"),)),
    "isolation-heals-before-fence": Outcome(
        has=("host.failed h1",), lacks=("host.fenced", "instance.evacuating"),
        running={"vm1": "h1", "vm2": "h1"}, never=("powered off",)),
    "app-fail-auto": Outcome(
        has=("instance.app_failed vm1", "instance.restarted vm1"),
        lacks=("instance.app_failed vm2", "instance.evacuating"),
        running={"vm1": "h1", "vm2": "h2"}),
    "app-escalation": Outcome(
        has=("instance.app_failed vm1", "instance.app_recovered vm1", "instance.app_failed vm2",
             "instance.restarted vm2", "instance.recovery_step vm2", "instance.restarted vm3"),
        lacks=("instance.restarted vm1", "instance.recovery_step vm1", "instance.recovery_failed",
               "job.failed"),
        running={"vm1": "h1", "vm2": "h2", "vm3": "h2"}, never=("vm1: world reset",),
        log_has=("vm1: world application restarted inside the guest",
                 "the application still fails 20 s after exec:/etc/init.d/app restart; "
                 "step 2 of 2: reset", "the guest agent did not answer; next: reset"),
        before=(("vm2: world in-guest restart on h2 did not help", "vm2: world reset"),)),
    "app-budget-controller-restart": Outcome(
        has=("instance.restarted vm1", "instance.recovery_failed vm1"),
        running={"vm1": "h1"},
        log_has=("restart budget spent: 2 restarts in 600 s",),
        before=(("controller: world new controller started", "step 2 of 2: reset"),
                ("controller: inject restart", "vm1: world reset on h1"))),
    "guest-freeze-unresponsive": Outcome(
        has=("instance.guest_unresponsive vm1", "instance.guest_unresponsive vm2",
             "instance.restarted vm1"),
        lacks=("instance.restarted vm2",), running={"vm1": "h1", "vm2": "h2"},
        never=("vm2: world reset",)),
    "watchdog-poweroff-and-restart": Outcome(
        has=("instance.watchdog vm1", "instance.watchdog vm2", "instance.restarted vm2"),
        lacks=("instance.restarted vm1",), running={"vm1": None, "vm2": "h2"}),
    "fence-level-two-methods": Outcome(
        has=FENCED_H1, running={"vm1": "not:h1", "vm2": "not:h1"},
        log_has=("h1: world bmc accepted redfish power-off",
                 "h1: world bmc accepted ipmi power-off")),
    "host-return-held": Outcome(
        has=FENCED_H1, lacks=("host.up h1",), running={"vm1": "not:h1", "vm2": "not:h1"},
        never=("compute service enabled",)),
    "evacuation-waves-by-priority": Outcome(
        has=FENCED_H1, running={f"p{p}": "in:h2,h3" for p in range(100, 900, 100)},
        before=(*((f"p{p}: instance.evacuating", f"p{p - 100}: instance.evacuating")
                  for p in range(800, 100, -100)),
                ("p700: world running", "p600: instance.evacuating"))),
    "two-segments": Outcome(
        has=FENCED_H1, running={"vm1": "in:a2,a3", "vm2": "in:a2,a3", "vm3": "b1"}),
    "lone-host-bmc-off": Outcome(
        has=("host.failed h9", "host.fenced h9", "instance.unplaceable vm9"),
        running={"vm9": None}),
    # custom recovery (decisions) and instance actions
    "custom-guest-answered": Outcome(
        has=("decision.requested vm1", "instance.restarted vm1"),
        lacks=("decision.timed_out",), running={"vm1": "h1"}, starts={"vm1": 1},
        log_has=("was already answered by user",)),
    "custom-guest-timeout": Outcome(
        has=("decision.requested vm1", "decision.timed_out vm1", "instance.restarted vm1"),
        running={"vm1": "h1"}, starts={"vm1": 1},
        log_has=("timed out before this answer; its fallback 'auto' was applied",)),
    "custom-app-fallback-none": Outcome(
        has=("decision.requested vm1", "decision.timed_out vm1"),
        lacks=("instance.restarted",), never=("vm1: world reset",),
        log_has=("fallback none: nothing is done",)),
    "custom-app-fallback-escalation": Outcome(
        has=("decision.requested vm1", "decision.timed_out vm1", "instance.app_recovered vm1",
             "decision.requested vm2", "instance.restarted vm2"),
        lacks=("instance.restarted vm1", "decision.timed_out vm2", "instance.recovery_failed"),
        never=("vm1: world reset",),
        log_has=("vm1: world application restarted inside the guest",
                 "fallback auto: its app_actions escalation"),
        before=(("decision.timed_out", "step 1 of 2: exec:/etc/init.d/app restart"),)),
    "custom-host-after-fence": Outcome(
        has=(*FENCED_H1, "decision.requested vm1", "decision.requested vm2",
             "decision.timed_out vm2"),
        lacks=("decision.requested vm3", "decision.timed_out vm1"),
        running={"vm1": "not:h1", "vm2": "not:h1", "vm3": "not:h1"},
        starts={"vm1": 1, "vm2": 1, "vm3": 1},
        before=(("h1: host.fenced", "vm1: decision.requested"),)),
    "custom-host-decision-waits-for-fence": Outcome(
        has=("host.fenced h1", "decision.requested vm1", "decision.timed_out vm1"),
        running={"vm1": "not:h1"}, starts={"vm1": 1},
        log_has=("refused 'action vm1 evacuate h2'",),
        before=(("h1: host.fenced", "vm1: decision.requested"),)),
    "custom-decision-controller-restart": Outcome(
        has=("decision.requested vm1", "decision.timed_out vm1", "instance.restarted vm1"),
        running={"vm1": "h1"}, starts={"vm1": 1},
        before=(("controller: inject restart", "vm1: decision.timed_out"),)),
    "instance-actions": Outcome(
        has=("instance.stopped vm1", "instance.started vm1", "instance.restarted vm1",
             "instance.evacuated vm1"),
        running={"vm1": "h2"},
        log_has=("refused 'action vm1 evacuate'", "refused 'action vm1 rebuild'")),
}

# Scenarios whose expected (right) behaviour the engine does not show yet:
# name -> why. Strict: the test fails once the engine gets it right.
# Such a scenario has no expected.log (it would record the wrong behaviour).
XFAIL: dict[str, str] = {}

NAMES = sorted(p.name for p in HERE.iterdir() if (p / "scenario.yaml").is_file())


def _params() -> list[object]:
    out: list[object] = []
    for name in NAMES:
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


def test_every_scenario_is_documented_and_has_an_outcome() -> None:
    assert len(NAMES) >= 25
    for name in NAMES:
        assert (HERE / name / "README.md").is_file(), name
        assert name in OUTCOMES, f"{name}: add its expected outcome to OUTCOMES"
        assert name in XFAIL or (HERE / name / "expected.log").is_file(), name


@pytest.mark.parametrize("name", _params())
def test_scenario(name: str, request: pytest.FixtureRequest) -> None:
    folder = HERE / name
    result = run_scenario(load_scenario(folder / "scenario.yaml"))
    got = [line.rstrip() for line in result.lines]
    golden = folder / "expected.log"
    # An xfail scenario's log records wrong behaviour: never keep it as golden.
    if request.config.getoption("--update-golden") and name not in XFAIL:
        golden.write_text("\n".join(got) + "\n")
    broken = result.report["violations"]
    assert result.invariants_ok, f"invariants broken: {broken}\n" + "\n".join(got)
    _check_outcome(OUTCOMES[name], result)
    if name in XFAIL:
        return  # right behaviour now: strict xfail turns this into a failure
    assert golden.is_file(), f"{golden} is missing; run pytest --update-golden and read it"
    want = golden.read_text().splitlines()
    if got != want:
        diff = "\n".join(difflib.unified_diff(want, got, "expected.log", "actual", lineterm=""))
        pytest.fail(f"{name}: the log differs from expected.log\n{diff}")


def _check_outcome(want: Outcome, result: RunResult) -> None:
    events = [f"{e['type']} {e['subject']}" for e in result.report["events"]]
    for needed in want.has:
        assert needed in events, f"missing event {needed!r}"
    for banned in want.lacks:
        hits = [e for e in events if e == banned or e.split()[0] == banned]
        assert not hits, f"unexpected event(s) {hits}"
    instances = result.report["instances"]
    for vm, where in want.running.items():
        on = instances[vm]["running_on"]
        assert _placed(on, where), f"{vm} runs on {on}, expected {where}"
    for vm, count in want.starts.items():
        starts = [line for line in result.lines if f"{vm}: world running on" in line
                  or f"{vm}: world defined on" in line]
        assert len(starts) == count, f"{vm} started {len(starts)} times: {starts}"
    text = "\n".join(result.lines) + "\n"
    for needle in want.never:
        assert needle not in text, f"the log contains {needle!r}"
    for needle in want.log_has:
        assert needle in text, f"the log lacks {needle!r}"
    for first, then in want.before:
        a, b = _first(result.lines, first), _first(result.lines, then)
        assert a < b, f"{first!r} (line {a}) should come before {then!r} (line {b})"


def _first(lines: list[str], needle: str) -> int:
    return next((i for i, line in enumerate(lines) if needle in line), len(lines))


def _placed(on: list[str], where: str | None) -> bool:
    if where is None:
        return on == []
    if len(on) != 1:
        return False
    if where.startswith("not:"):
        return on[0] != where[4:]
    if where.startswith("in:"):
        return on[0] in where[3:].split(",")
    return on == [where]
