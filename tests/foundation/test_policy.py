"""HA policy: parsing, validation naming the field, round trip."""

from __future__ import annotations

import pytest

from vmha.domain.errors import ValidationError
from vmha.domain.policy import DEFAULT_POLICY, HAPolicy, LayerMode, ProbeKind


def test_round_trip_through_plain_data() -> None:
    data = {
        "host": "auto+notify",
        "guest": "notify",
        "app": "custom",
        "priority": 900,
        "max_restarts": 5,
        "window_s": 300,
        "evacuate_to_stopped": True,
        "watchdog_action": "reset+notify",
        "probes": [{"kind": "http", "target": "http://198.18.1.10:8080/health"}],
    }
    policy = HAPolicy.from_dict(data)
    assert policy.host is LayerMode.AUTO_NOTIFY and policy.protected
    assert policy.probes[0].kind is ProbeKind.HTTP
    assert HAPolicy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"host": "sometimes"}, "host", "'auto'"),
        ({"priority": 1001}, "priority", "0..1000"),
        ({"priority": "high"}, "priority", "whole number"),
        ({"window_s": 0}, "window_s", "seconds"),
        ({"evacuate_to_stopped": "yes"}, "evacuate_to_stopped", "true or false"),
        ({"colour": "blue"}, "colour", "allowed"),
        ({"probes": [{"kind": "tcp", "target": "http"}]}, "probes[0].target", "TCP port"),
        ({"probes": [{"kind": "ping", "target": "x"}]}, "probes[0].kind", "'http'"),
        ({"probes": [{"kind": "http", "target": "http://x/", "timeout_s": 20}]},
         "probes[0].timeout_s", "interval_s"),
    ],
)
def test_bad_policies_name_the_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        HAPolicy.from_dict(data)
    assert info.value.field == field
    assert words in str(info.value)


def test_defaults_protect_against_host_failure_and_only_notify_for_apps() -> None:
    assert DEFAULT_POLICY.protected
    assert DEFAULT_POLICY.app is LayerMode.NOTIFY
    assert not HAPolicy(host=LayerMode.NOTIFY).protected
