"""The scenario parser: valid files become values, bad ones name the key."""

from __future__ import annotations

import pytest

from vmha.domain.model import RecoveryMethod
from vmha.errors import ValidationError
from vmha.sim.scenario import DEFAULT_FENCE, parse_scenario

GOOD = """
seed: 3
config: {heartbeat_interval_s: 0.5}
sim: {host_boot_s: 12}
segments:
  s1: {recovery_method: reserved_host, mass_failure_threshold: 0.6}
hosts:
  h1: {segment: s1, vcpus: 16, ram_mb: 65536, fence: [[redfish, ipmi], agent_watchdog]}
  h2: {segment: s1, vcpus: 8, ram_mb: 32768, reserved: true}
instances:
  vm1: {host: h1, vcpus: 2, ram_mb: 4096, priority: 100,
        policy: {host: auto, guest: auto, app: notify, max_restarts: 3, window_s: 600}}
commands:
  - {at: 30, do: bmc h2 unreachable}
  - {at: 10, do: network h1 delay 200 50}
  - {at: 10, do: network h1 loss 30%}
  - {at: 40, do: operator resume s1}
  - {at: 50, do: controller restart}
"""


def test_a_valid_scenario_becomes_values() -> None:
    s = parse_scenario(GOOD)
    assert s.seed == 3
    assert s.config == {"heartbeat_interval_s": 0.5}
    assert s.sim.host_boot_s == 12.0
    assert s.segments[0].recovery_method is RecoveryMethod.RESERVED_HOST
    h1, h2 = s.hosts
    assert h1.fence_levels == (("redfish", "ipmi"), ("agent_watchdog",))
    assert h2.fence_levels == DEFAULT_FENCE and h2.reserved
    vm = s.instances[0]
    assert vm.policy is not None and vm.policy.priority == 100
    assert vm.resources.vcpus == 2
    # sorted by time, file order kept for equal times
    assert [c.text for c in s.commands] == [
        "network h1 delay 200 50", "network h1 loss 30%", "bmc h2 unreachable",
        "operator resume s1", "controller restart",
    ]
    assert s.commands[0].numbers == (200.0, 50.0)
    assert s.commands[1].numbers == (30.0,)
    assert s.last_command_at == 50.0


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ("  - {at: 1, do: powr-off h1}\n", "commands[5].do", "unknown command 'powr-off h1'"),
        ("  - {at: 1, do: power-off h9}\n", "commands[5].do", "'h9' is not a host"),
        ("  - {at: 1, do: guest vm9 panic}\n", "commands[5].do", "'vm9' is not an instance"),
        ("  - {at: 1, do: guest vm1 explode}\n", "commands[5].do", "panic, hang, freeze, ok"),
        ("  - {at: 1, do: network h1 loss 130}\n", "commands[5].do", "percentage"),
        ("  - {at: 1, do: network h1 delay}\n", "commands[5].do", "number of arguments"),
        ("  - {at: 1, do: operator resume s9}\n", "commands[5].do", "'s9' is not a segment"),
        ("  - {at: -1, do: power-off h1}\n", "commands[5].at", "below"),
        ("  - {do: power-off h1}\n", "commands[5]", "needs both"),
    ],
)
def test_bad_commands_name_the_index_and_what_is_allowed(change: str, field: str,
                                                          words: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_scenario(GOOD + change)
    assert err.value.field == field
    assert words in str(err.value)


def test_unknown_command_lists_the_vocabulary() -> None:
    with pytest.raises(ValidationError) as err:
        parse_scenario(GOOD + "  - {at: 1, do: reboot h1}\n")
    assert "allowed: power-off H, power-on H" in str(err.value)
    assert "operator fence-ack H [force]|fence H [METHOD]|resume S" in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("segment: s1, vcpus: 8", "segment: s2, vcpus: 8", "hosts.h2.segment"),
        ("fence: [[redfish, ipmi]", "fence: [[redfish, ipmy]", "hosts.h1.fence[0]"),
        ("host: h1, vcpus: 2", "host: h7, vcpus: 2", "instances.vm1.host"),
        ("max_restarts: 3", "max_restarts: -1", "instances.vm1.policy.max_restarts"),
        ("mass_failure_threshold: 0.6", "mass_failure_threshold: 1.6",
         "segments.s1.mass_failure_threshold"),
        ("recovery_method: reserved_host", "recovery_method: best", "segments.s1.recovery_method"),
        ("host_boot_s: 12", "boot_s: 12", "sim.boot_s"),
        ("vcpus: 16", "vcpus: many", "hosts.h1.vcpus"),
        ("seed: 3", "seed: 3\nextra: 1", "extra"),
        ("host_boot_s: 12", "host_boot_s: 12, bmc_power_off_min_s: 3",
         "sim.bmc_power_off_max_s"),
        ("fence: [[redfish, ipmi], agent_watchdog]", "fence: []", "hosts.h1.fence"),
        ("reserved: true", "reserved: 1", "hosts.h2.reserved"),
        ("seed: 3", "seed: 3.5", "seed"),
    ],
)
def test_bad_cluster_keys_are_named(old: str, new: str, field: str) -> None:
    assert old in GOOD
    with pytest.raises(ValidationError) as err:
        parse_scenario(GOOD.replace(old, new, 1))
    assert err.value.field == field


def test_not_yaml_and_not_a_mapping_are_refused() -> None:
    with pytest.raises(ValidationError, match="not valid YAML"):
        parse_scenario("hosts: [")
    with pytest.raises(ValidationError, match="must be a mapping"):
        parse_scenario("- 1\n- 2\n")


@pytest.mark.parametrize(
    ("old", "new", "field", "allowed"),
    [
        ("vcpus: 2,", "vcpus: 2, colour: red,", "instances.vm1.colour",
         "allowed: vcpus, ram_mb, disk_gb, host, priority, policy"),
        ("{at: 50, do: controller restart}", "{at: 50, do: controller restart, why: x}",
         "commands[4].why", "allowed: at, do"),
    ],
)
def test_an_unknown_key_is_named_with_the_keys_allowed_there(old: str, new: str, field: str,
                                                              allowed: str) -> None:
    assert old in GOOD
    with pytest.raises(ValidationError) as err:
        parse_scenario(GOOD.replace(old, new, 1))
    assert err.value.field == field
    assert allowed in str(err.value)
