"""ControllerSettings.from_mapping: a scenario's `config:` block."""

from __future__ import annotations

import pytest

from vmha.domain.errors import ValidationError
from vmha.engine import ControllerSettings


def test_defaults_and_overrides() -> None:
    s = ControllerSettings.from_mapping({"heartbeat_interval_s": 0.5, "confirm_peers": 2,
                                         "default_fence_levels": ["ipmi", ["manual"]]})
    assert s.heartbeat_interval_s == 0.5 and s.confirm_peers == 2
    assert s.default_fence_levels == (("ipmi",), ("manual",))
    assert s.detector_config().interval_s == 0.5
    assert ControllerSettings().max_parallel_evacuations == 4


@pytest.mark.parametrize(("data", "key"), [
    ({"no_such_setting": 1}, "no_such_setting"),
    ({"confirm_peers": 1.5}, "confirm_peers"),
    ({"fence_timeout_s": "10"}, "fence_timeout_s"),
    ({"fence_timeout_s": True}, "fence_timeout_s"),
    ({"fence_timeout_s": -1}, "fence_timeout_s"),
    ({"default_fence_levels": ["telnet"]}, "default_fence_levels"),
    ({"default_fence_levels": []}, "default_fence_levels"),
    ({"evacuation_target": "nova"}, "evacuation_target"),
    ({"evacuation_target": 1}, "evacuation_target"),
])
def test_bad_values_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        ControllerSettings.from_mapping(data)
    assert err.value.field == key


def test_the_cloud_scheduler_needs_a_cloud_that_has_one() -> None:
    """`evacuation_target = "scheduler"` on a cloud without a scheduler of
    its own (libvirt, the fake) stops the engine at construction."""
    from engine_harness import World

    from vmha.domain.errors import ConfigError

    w = World(settings=ControllerSettings.from_mapping({"evacuation_target": "scheduler"}))
    with pytest.raises(ConfigError, match="no scheduler of its own"):
        w.start()


def test_openstack_target_becomes_the_engines_evacuation_target() -> None:
    from vmha.config import Settings, controller_settings

    on_nova = Settings.model_validate({"cloud": {"adapter": "openstack"},
                                       "openstack": {"cloud": "c", "target": "scheduler"}})
    assert controller_settings(on_nova).evacuation_target == "scheduler"
    assert controller_settings(Settings()).evacuation_target == "planner"
