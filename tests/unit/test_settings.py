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
])
def test_bad_values_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        ControllerSettings.from_mapping(data)
    assert err.value.field == key
