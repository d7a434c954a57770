"""HA policy: parsing, validation naming the field, round trip."""

from __future__ import annotations

import pytest

from vmha.domain.errors import ValidationError
from vmha.domain.policy import (
    DEFAULT_POLICY,
    HAPolicy,
    LayerMode,
    ProbeKind,
    agent_watch,
    check_cloud,
    check_fits,
)
from vmha.domain.spec import InstanceSpec


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


# -- probes and the application escalation ----------------------------------------------


@pytest.mark.parametrize(
    ("probe", "field", "words"),
    [
        ({"kind": "http", "target": "ftp://vm/health"}, "probes[0].target", "http(s) URL"),
        ({"kind": "http", "target": "http://vm:0/health"}, "probes[0].target", "port 0"),
        ({"kind": "http", "target": "http://vm:70000/"}, "probes[0].target", "invalid port"),
        ({"kind": "http", "target": "http:///health"}, "probes[0].target", "with a host"),
        ({"kind": "http", "target": "http://u:pw@vm/"}, "probes[0].target", "credentials"),
        ({"kind": "http", "target": "http://vm/ x"}, "probes[0].target", "spaces"),
        ({"kind": "tcp", "target": "0"}, "probes[0].target", "TCP port"),
        ({"kind": "tcp", "target": "vm:0"}, "probes[0].target", "TCP port"),
        ({"kind": "tcp", "target": "bad host!:22"}, "probes[0].target", "host name"),
        ({"kind": "exec", "target": "'unclosed"}, "probes[0].target", "cannot split"),
        ({"kind": "exec", "target": "   "}, "probes[0].target", "command"),
        ({"kind": "tcp", "target": "22", "expect": "ok"}, "probes[0].expect", "http"),
        ({"kind": "http", "target": "http://vm/", "success_threshold": 0},
         "probes[0].success_threshold", "1 to 100"),
        ({"kind": "http", "target": "http://vm/", "initial_delay_s": -1},
         "probes[0].initial_delay_s", "[0, 3600]"),
        ({"kind": "http", "target": "http://vm/", "interval_s": "fast"},
         "probes[0].interval_s", "not a number"),
        ({"kind": "http", "target": "http://vm/", "colour": 1}, "probes[0].colour", "unknown"),
    ],
)
def test_bad_probes_name_the_field(probe: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        HAPolicy.from_dict({"probes": [probe]})
    assert info.value.field == field
    assert words in str(info.value)


def test_probe_fields_round_trip_with_defaults() -> None:
    policy = HAPolicy.from_dict({
        "app": "auto",
        "probes": [{"kind": "http", "target": "https://[2001:db8::1]:8443/health?deep=1",
                    "expect": "ok", "success_threshold": 2, "initial_delay_s": 20},
                   {"kind": "tcp", "target": 5432},
                   {"kind": "exec", "target": "/usr/bin/check --quiet 'a b'"}],
        "app_actions": ["exec:/etc/init.d/app restart", "reboot", "reset", "restart",
                        "rebuild"],
        "app_grace_s": 15, "guest_ping_s": 2, "guest_ping_failures": 4,
    })
    http, tcp, exe = policy.probes
    assert (http.expect, http.success_threshold, http.initial_delay_s) == ("ok", 2, 20.0)
    assert (tcp.target, tcp.failure_threshold, tcp.interval_s) == ("5432", 3, 10.0)
    assert exe.name == "exec /usr/bin/check --quiet 'a b'"
    assert [s.kind for s in policy.app_actions] == ["exec", "reboot", "reset", "restart",
                                                    "rebuild"]
    assert policy.app_actions[0].command == ("/etc/init.d/app", "restart")
    assert policy.to_dict()["app_actions"][0] == "exec:/etc/init.d/app restart"
    assert HAPolicy.from_dict(policy.to_dict()) == policy
    assert [str(s) for s in DEFAULT_POLICY.app_actions] == ["reset"]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"app_actions": []}, "app_actions", "1 to 8"),
        ({"app_actions": "reset"}, "app_actions", "list of steps"),
        ({"app_actions": ["explode"]}, "app_actions[0]", "exec:<command>"),
        ({"app_actions": ["reset", "exec"]}, "app_actions[1]", "needs a command"),
        ({"app_actions": ["exec:"]}, "app_actions[0]", "command"),
        ({"app_actions": ["reset:now"]}, "app_actions[0]", "takes no argument"),
        ({"app_actions": ["rebuild:image-2"]}, "app_actions[0]", "takes no argument"),
        ({"app_actions": [5]}, "app_actions[0]", "step name"),
        ({"app_grace_s": 0}, "app_grace_s", "(0, 3600]"),
        ({"guest_ping_s": 0.5}, "guest_ping_s", "0 (off)"),
        ({"guest_ping_failures": 0}, "guest_ping_failures", "1 to 100"),
    ],
)
def test_bad_escalations_name_the_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        HAPolicy.from_dict(data)
    assert info.value.field == field
    assert words in str(info.value)


def test_exec_needs_the_guest_agent_channel_and_bare_tcp_ports_an_address() -> None:
    exec_probe = HAPolicy.from_dict({"probes": [{"kind": "exec", "target": "/bin/true"}]})
    exec_step = HAPolicy.from_dict({"app_actions": ["reset", "exec:/bin/true"]})
    template = InstanceSpec(image="lab", address="198.18.1.11/24")
    bare_xml = InstanceSpec(xml="<domain><devices/></domain>")
    with_channel = InstanceSpec(xml="<domain><devices><channel type='unix'><target "
                                    "type='virtio' name='org.qemu.guest_agent.0'/></channel>"
                                    "</devices></domain>")
    assert template.guest_agent and with_channel.guest_agent and not bare_xml.guest_agent
    for policy, field in ((exec_probe, "probes[0].kind"), (exec_step, "app_actions[1]")):
        check_fits(policy, template)
        check_fits(policy, with_channel)
        check_fits(policy, None)  # the cloud defines it: nothing to check here
        with pytest.raises(ValidationError) as info:
            check_fits(policy, bare_xml)
        assert info.value.field == field and "guest agent channel" in info.value.reason
    bare_port = HAPolicy.from_dict({"probes": [{"kind": "tcp", "target": "22"}]})
    check_fits(bare_port, template)
    with pytest.raises(ValidationError, match="HOST:PORT") as info:
        check_fits(bare_port, with_channel)
    assert info.value.field == "probes[0].target"


def test_agent_watch_resolves_tcp_hosts_and_follows_the_layers() -> None:
    policy = HAPolicy.from_dict({
        "app": "notify", "guest_ping_s": 3,
        "probes": [{"kind": "tcp", "target": "22"}, {"kind": "tcp", "target": "db:5432"},
                   {"kind": "http", "target": "http://vm/"}]})
    watch = agent_watch(policy, "198.18.1.11")
    assert watch is not None
    assert [p["target"] for p in watch["probes"]] == ["198.18.1.11:22", "db:5432", "http://vm/"]
    assert watch["guest_ping"] == {"interval_s": 3.0, "failures": 3}
    no_address = agent_watch(policy, "")
    assert no_address is not None
    assert [p["target"] for p in no_address["probes"]] == ["db:5432", "http://vm/"]
    assert agent_watch(policy, "2001:db8::5")["probes"][0]["target"] == "[2001:db8::5]:22"  # type: ignore[index]
    app_off = agent_watch(HAPolicy.from_dict({**policy.to_dict(), "app": "off"}), "x")
    assert app_off == {"probes": [], "guest_ping": {"interval_s": 3.0, "failures": 3}}
    assert agent_watch(HAPolicy(app=LayerMode.OFF, guest=LayerMode.OFF), "x") is None
    assert agent_watch(HAPolicy(guest_ping_s=0), "x") is None


def test_rebuild_needs_a_cloud_that_rebuilds() -> None:
    policy = HAPolicy.from_dict({"app_actions": ["exec:/bin/true", "rebuild"]})
    check_cloud(policy, can_rebuild=True)
    with pytest.raises(ValidationError) as info:
        check_cloud(policy, can_rebuild=False)
    assert info.value.field == "app_actions[1]" and "OpenStack" in str(info.value)
    check_cloud(HAPolicy.from_dict({"app_actions": ["reset"]}), can_rebuild=False)
