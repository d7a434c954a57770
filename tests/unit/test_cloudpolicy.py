"""Policies of OpenStack servers from Nova's keys: precedence, foreign keys, bad values."""

from __future__ import annotations

import pytest

from vmha.domain.cloudpolicy import Layers, derive
from vmha.domain.policy import HAPolicy, LayerMode, WatchdogAction


def layers(metadata: dict[str, str] | None = None, image: dict[str, str] | None = None,
           flavor: dict[str, str] | None = None) -> Layers:
    return Layers(metadata or {}, image or {}, flavor or {})


def test_no_vmha_key_means_the_segment_default() -> None:
    got = derive(layers({"owner": "ann"}))
    assert got.policy is None and got.problems == ()


@pytest.mark.parametrize(("where", "expected"), [
    ({"metadata": "notify", "image": "off", "flavor": "custom"}, LayerMode.NOTIFY),
    ({"image": "off", "flavor": "custom"}, LayerMode.OFF),
    ({"flavor": "custom"}, LayerMode.CUSTOM),
])
def test_server_metadata_beats_image_beats_flavor(where: dict[str, str],
                                                  expected: LayerMode) -> None:
    keys = {layer: {"vmha:host": value} for layer, value in where.items()}
    got = derive(layers(keys.get("metadata"), keys.get("image"), keys.get("flavor")))
    assert got.policy is not None and got.policy.host is expected
    assert got.sources == {"host": next(iter(where))}


def test_keys_merge_one_by_one_over_the_segment_default() -> None:
    default = HAPolicy(priority=100, max_restarts=7)
    got = derive(layers({"vmha:priority": "900"}, {"vmha:evacuate_to_stopped": "true"},
                        {"vmha:priority": "1", "vmha:guest": "notify"}), default)
    assert got.policy is not None
    assert (got.policy.priority, got.policy.evacuate_to_stopped, got.policy.guest,
            got.policy.max_restarts) == (900, True, LayerMode.NOTIFY, 7)


@pytest.mark.parametrize(("meta", "key", "value"), [
    ({"vmha:priority": "high"}, "vmha:priority", "high"),
    ({"vmha:host": "sometimes"}, "vmha:host", "sometimes"),
    ({"vmha:priority": "5000"}, "vmha:priority", "5000"),
    ({"vmha:evacuate_to_stopped": "perhaps"}, "vmha:evacuate_to_stopped", "perhaps"),
])
def test_a_bad_value_keeps_the_default_and_names_key_and_value(
        meta: dict[str, str], key: str, value: str) -> None:
    got = derive(layers(meta))
    assert got.policy is None
    assert [(p.key, p.value, p.layer) for p in got.problems] == [(key, value, "metadata")]


def test_masakari_ha_enabled_is_honoured_unless_vmha_host_says_otherwise() -> None:
    on = derive(layers({"HA_Enabled": "True"}), HAPolicy(host=LayerMode.OFF))
    assert on.policy is not None and on.policy.host is LayerMode.AUTO
    off = derive(layers({"HA_Enabled": "False"}))
    assert off.policy is not None and off.policy.host is LayerMode.OFF
    ours = derive(layers({"HA_Enabled": "True", "vmha:host": "notify"}))
    assert ours.policy is not None and ours.policy.host is LayerMode.NOTIFY


def test_evacuable_tags_only_when_turned_on() -> None:
    tagged = layers(flavor={"evacuable": "true"})
    untagged = layers(image={"os_distro": "debian"})
    assert derive(tagged).policy is None  # off by default: tags mean nothing
    on = derive(tagged, evacuable_tags=True)
    assert on.policy is not None and on.policy.host is LayerMode.AUTO
    left = derive(untagged, evacuable_tags=True)
    assert left.policy is not None and left.policy.host is LayerMode.OFF


def test_watchdog_action_is_read_from_flavor_or_image() -> None:
    got = derive(layers({"vmha:host": "auto"}, {"hw:watchdog_action": "poweroff"},
                        {"hw:watchdog_action": "reset"}))
    assert got.watchdog_action == "poweroff"
    assert got.policy is not None and got.policy.watchdog_action is WatchdogAction.POWEROFF
    shown_only = derive(layers(flavor={"hw:watchdog_action": "disabled"}))
    assert shown_only.policy is None and shown_only.watchdog_action == "disabled"


@pytest.mark.parametrize("value", ['["reset", "rebuild"]', "reset, rebuild", " reset,rebuild "])
def test_app_actions_as_a_json_list_or_separated_by_commas(value: str) -> None:
    got = derive(layers({"vmha:app": "auto", "vmha:app_actions": value}))
    assert got.problems == ()
    assert got.policy is not None
    assert [str(s) for s in got.policy.app_actions] == ["reset", "rebuild"]
    assert got.sources == {"app": "metadata", "app_actions": "metadata"}


def test_app_actions_from_the_flavor_under_a_metadata_mode() -> None:
    got = derive(layers({"vmha:app": "auto"}, flavor={"vmha:app_actions": "restart"}))
    assert got.policy is not None and [str(s) for s in got.policy.app_actions] == ["restart"]
    assert got.sources is not None and got.sources["app_actions"] == "flavor"


@pytest.mark.parametrize(("value", "why"), [
    ("reset, explode", "app_actions[1]: 'explode' is not one of"),
    ("reset,,rebuild", "app_actions[1]: '' is not one of"),
    ('["reset", 3]', "must be a JSON list of step names"),
    ('{"steps": ["reset"]}', "not one of"),
    ('["reset"', "not a JSON list"),
    ("[]", "must list 1 to 8 steps"),
    (", ".join(["reset"] * 9), "must list 1 to 8 steps"),
    ("reset:now", "reset takes no argument"),
    ("exec:/etc/init.d/app restart, reset", "exec steps are not taken from Nova's keys"),
    ('["exec:/bin/rm -rf /"]', "exec steps are not taken from Nova's keys"),
])
def test_a_bad_app_actions_value_is_a_problem_and_the_default_applies(value: str,
                                                                       why: str) -> None:
    got = derive(layers({"vmha:app": "auto", "vmha:app_actions": value}))
    assert got.policy is None
    assert [(p.key, p.value, p.layer) for p in got.problems] == [
        ("vmha:app_actions", value, "metadata")]
    assert why in got.problems[0].reason
