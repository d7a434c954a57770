"""The agent's probe document and its state changes (pure: no I/O)."""

from __future__ import annotations

import logging

import pytest

from vmha.agent.probes import (
    AppHealth,
    Counter,
    PingHealth,
    PingSpec,
    parse_document,
)
from vmha.domain.probes import Probe, ProbeKind

U1 = "6f1d3a52-8c47-4e0b-9a1e-3b5c7d9e0f21"
U2 = "0b6a1c1e-2d3f-4a5b-8c7d-9e0f1a2b3c4d"
HTTP = Probe(ProbeKind.HTTP, "http://198.18.1.11:8080/health", interval_s=1, timeout_s=0.5,
             failure_threshold=3, success_threshold=2)
TCP = Probe(ProbeKind.TCP, "198.18.1.11:22", interval_s=1, timeout_s=0.5, failure_threshold=1)


def test_counter_needs_the_thresholds_in_a_row() -> None:
    c = Counter()
    assert [c.record(False, "refused", 3, 2) for _ in range(2)] == [None, None]
    assert c.record(True, "", 3, 2) is None  # a success breaks the run
    assert [c.record(False, "refused", 3, 2) for _ in range(3)] == [None, None, "failed"]
    assert c.record(False, "refused", 3, 2) is None  # already failing: no second change
    assert (c.failures, c.last_error) == (4, "refused")
    assert [c.record(True, "", 3, 2) for _ in range(3)] == [None, "recovered", None]


def test_failures_while_booting_are_not_counted() -> None:
    c = Counter()
    assert [c.record(False, "refused", 1, 1, counting=False) for _ in range(5)] == [None] * 5
    assert c.failures == 0 and c.last_error == "refused"
    assert c.record(False, "refused", 1, 1) == "failed"


def test_app_fails_on_the_first_probe_and_recovers_when_all_pass() -> None:
    app = AppHealth()
    assert app.record(TCP, False, "connection refused", True) is not None
    failed = app.record(HTTP, False, "HTTP 503", True)
    assert failed is None and app.failed  # already reported by the tcp probe
    for _ in range(2):
        app.record(HTTP, False, "HTTP 503", True)
    assert app.failing_probes() == [TCP.name, HTTP.name]
    assert app.record(TCP, True, "", True) is None  # http still failing
    assert app.record(HTTP, True, "", True) is None  # success_threshold 2
    back = app.record(HTTP, True, "", True)
    assert back is not None and (back.kind, back.probe, back.count) == (
        "app_recovered", HTTP.name, 2)
    assert not app.failed


def test_first_failure_report_names_probe_error_and_count() -> None:
    app = AppHealth()
    reports = [app.record(HTTP, False, "no answer within 0.5 s", True) for _ in range(3)]
    assert reports[:2] == [None, None]
    assert reports[2] is not None
    assert (reports[2].kind, reports[2].probe, reports[2].detail, reports[2].count) == (
        "app_failed", HTTP.name, "no answer within 0.5 s", 3)


def test_a_remembered_failure_recovers_on_success_after_an_agent_restart() -> None:
    app = AppHealth(failed=True)  # from probe-state.json
    assert app.record(HTTP, True, "", True) is None
    report = app.record(HTTP, True, "", True)
    assert report is not None and report.kind == "app_recovered"


def test_removing_the_failing_probe_recovers_the_application() -> None:
    app = AppHealth()
    app.record(TCP, False, "refused", True)
    app.record(HTTP, True, "", True)
    assert app.keep_only((HTTP, TCP)) is None
    assert app.keep_only((HTTP,)) is None  # http, first seen while failed, passed once of 2
    app.keep_only((HTTP, TCP))
    app.record(TCP, False, "refused", True)
    app.record(HTTP, True, "", True)
    report = app.keep_only((HTTP,))
    assert report is not None and report.kind == "app_recovered" and report.probe == TCP.name
    assert AppHealth(failed=True).keep_only(()) is not None  # no probe left at all
    assert AppHealth(failed=True).keep_only((HTTP,)) is None  # unknown yet: wait for results


def test_ping_counts_only_once_the_agent_answered_since_boot() -> None:
    spec = PingSpec(interval_s=1, failures=2)
    ping = PingHealth()
    assert [ping.record(spec, False, "not connected") for _ in range(5)] == [None] * 5
    assert ping.record(spec, True, "") is None and ping.seen
    assert ping.record(spec, False, "timeout") is None
    report = ping.record(spec, False, "timeout")
    assert report is not None and (report.kind, report.count) == ("guest_unresponsive", 2)
    back = ping.record(spec, True, "")
    assert back is not None and back.kind == "guest_responsive"
    ping.restart()  # the guest rebooted: the agent must connect again first
    assert [ping.record(spec, False, "not connected") for _ in range(3)] == [None] * 3
    assert PingSpec(10, 3).timeout_s == 2.0 and PingSpec(1, 3).timeout_s == 1.0


def test_document_entries_that_cannot_be_used_are_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    doc = {"instances": [
        {"domain": U1, "instance": "i1", "name": "vm1",
         "probes": [{"kind": "http", "target": HTTP.target, "interval_s": 1, "timeout_s": 0.5}],
         "guest_ping": {"interval_s": 5, "failures": 3}},
        {"domain": U2, "instance": "i2", "name": "vm2",
         "probes": [{"kind": "tcp", "target": "0"}]},
        {"domain": "not-a-uuid", "name": "vm3"},
        {"domain": U2, "name": "vm4", "guest_ping": {"interval_s": 0, "failures": 3}},
        "junk",
    ]}
    with caplog.at_level(logging.ERROR):
        watched = parse_document(doc)
    assert list(watched) == [U1]
    assert watched[U1].probes[0].target == HTTP.target
    assert watched[U1].ping == PingSpec(5.0, 3)
    for name, words in (("vm2", "TCP port"), ("vm3", "not a UUID"), ("vm4", "interval_s")):
        assert any(name in r.message and words in r.message for r in caplog.records), name
    assert parse_document({"nothing": 1}) == {}
