"""CloudEvents / oslo rendering, the webhook signature, and URL safety."""

from __future__ import annotations

import ipaddress
import json

import pytest

from vmha.adapters.bus import urls
from vmha.adapters.bus.render import cloudevent, cloudevent_json, oslo_notification
from vmha.adapters.bus.webhook import sign, verify
from vmha.domain.model import Event, Severity, SubjectKind
from vmha.errors import ValidationError

EVENT = Event(
    type="instance.crashed", subject="vm-1", time=1_800_000_000.25,
    subject_kind=SubjectKind.INSTANCE, project="p1", severity=Severity.ERROR,
    payload={"host": "h1", "reason": "pvpanic"}, id=42,
)


def test_cloudevent_has_the_required_attributes_and_the_payload() -> None:
    ce = cloudevent(EVENT, source="vmha/ctl-1")
    assert ce["specversion"] == "1.0" and ce["id"] == "42" and ce["source"] == "vmha/ctl-1"
    assert ce["type"] == "instance.crashed" and ce["subject"] == "vm-1"
    assert ce["time"] == "2027-01-15T08:00:00.250Z"
    assert ce["datacontenttype"] == "application/json"
    assert ce["vmhaproject"] == "p1" and ce["vmhaseverity"] == "error"
    assert ce["data"] == {"subject_kind": "instance", "project": "p1", "severity": "error",
                          "host": "h1", "reason": "pvpanic"}
    assert json.loads(cloudevent_json(EVENT, "vmha/ctl-1")) == ce
    assert cloudevent_json(EVENT) == cloudevent_json(EVENT)  # same bytes on a re-send


def test_oslo_envelope() -> None:
    note = oslo_notification(EVENT, publisher_id="vmha.ctl-1")
    assert note["event_type"] == "vmha.instance.crashed"
    assert note["priority"] == "ERROR" and note["publisher_id"] == "vmha.ctl-1"
    assert note["timestamp"] == "2027-01-15 08:00:00.250000"
    assert note["payload"]["id"] == 42 and note["payload"]["host"] == "h1"
    assert note["message_id"] == oslo_notification(EVENT, "vmha.ctl-1")["message_id"]
    other = oslo_notification(Event("host.up", "h1", 1.0, id=43), "vmha.ctl-1")
    assert other["message_id"] != note["message_id"] and other["priority"] == "INFO"


def test_signature_verifies_and_rejects_tampering_and_replays() -> None:
    body = cloudevent_json(EVENT)
    header = sign("s3cret-s3cret-s3cret", 1_800_000_000, body)
    assert header.startswith("t=1800000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("s3cret-s3cret-s3cret", header, body, now=1_800_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body + b" ", now=1_800_000_100)
    assert not verify("other-secret-other", header, body, now=1_800_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body, now=1_800_000_301)
    assert not verify("s3cret-s3cret-s3cret", "v1=abc", body, now=1_800_000_000)


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://example.com/x", "scheme 'ftp'"),
    ("http://user:pw@example.com/hook", "credentials"),
    ("https:///nohost", "no host"),
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:192.168.1.1]/hook", "private"),
    ("http://0.0.0.0/hook", "unicast"),
    ("http://localhost:8080/hook", "loopback"),
    # IPv6 forms that carry an IPv4 address are judged by that address too.
    ("http://[::127.0.0.1]/", "carries the IPv4 address 127.0.0.1"),
    ("http://[::ffff:0:10.0.0.1]/", "carries the IPv4 address 10.0.0.1"),
    ("http://[64:ff9b::7f00:1]/", "carries the IPv4 address 127.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),
    ("http://[2002:a9fe:a9fe::1]/", "metadata"),
    ("http://[2002:7f00:1::1]/", "loopback"),
    ("http://[2001:db8::5efe:a00:1]/", "10.0.0.1"),
    ("http://[64:ff9b:1::a9fe:a9fe]/", "NAT64 local-use"),
])
def test_unsafe_urls_are_refused_naming_url(url: str, why: str) -> None:
    with pytest.raises(ValidationError) as err:
        urls.check_url(url, allow_private=False)
    assert err.value.field == "url" and why in err.value.reason


def test_allow_private_admits_loopback_but_never_metadata() -> None:
    urls.check_url("http://127.0.0.1:9/hook", allow_private=True)
    urls.check_url("http://10.1.2.3/hook", allow_private=True)
    with pytest.raises(ValidationError, match="metadata"):
        urls.check_url("http://169.254.169.254/", allow_private=True)
    urls.check_url("https://93.184.216.34/hook", allow_private=False)  # public literal


@pytest.mark.parametrize("url", [
    "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::]/", "http://[::169.254.169.254]/",
    "http://[::ffff:169.254.169.254]/", "http://[64:ff9b:1::a9fe:a9fe]/",
    "http://100.100.100.200/",
])
def test_metadata_inside_ipv6_is_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(ValidationError):
        urls.check_url(url, allow_private=True)


def test_public_ipv4_inside_nat64_and_6to4_passes() -> None:
    urls.check_url("http://[64:ff9b::5db8:d822]/hook", allow_private=False)  # 93.184.216.34
    urls.check_url("http://[2002:5db8:d822::1]/hook", allow_private=False)


def test_every_resolved_address_must_pass() -> None:
    public, private = ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")
    urls.check_addresses("hooks.example", [public], allow_private=False)
    with pytest.raises(ValidationError, match=r"hooks.example \(10.0.0.1\)"):
        urls.check_addresses("hooks.example", [public, private], allow_private=False)


def test_ceilometer_priorities_are_info_or_error_and_carry_the_project() -> None:
    host = Event("host.failed", "h1", 1.0, severity=Severity.CRITICAL, id=5)
    warn = Event("instance.policy_invalid", "i1", 1.0, severity=Severity.WARNING, project="p1")
    assert oslo_notification(host)["priority"] == "CRITICAL"
    note = oslo_notification(host, project_id="ops", ceilometer=True)
    assert note["priority"] == "ERROR" and note["payload"]["severity"] == "critical"
    assert (note["payload"]["project_id"], note["payload"]["tenant_id"]) == ("ops", "ops")
    mine = oslo_notification(warn, project_id="ops", ceilometer=True)
    assert mine["priority"] == "INFO" and mine["payload"]["project_id"] == "p1"
