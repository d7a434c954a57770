"""`GET /metrics`: the exposition a real scrape gets, token-protected, with
recovery histograms filled from a finished job's recorded steps, bounded
per-host series, and the monitoring files in etc/ checked against it."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tiers import promtool
from vmha.api.context import Liveness
from vmha.api.metrics import ControllerMetrics, install
from vmha.domain.model import (
    Event,
    Job,
    JobKind,
    JobState,
    JobStep,
    Severity,
    SubjectKind,
)
from vmha.ports import Store

ClientFor = Callable[[str | None], TestClient]
ETC = Path(__file__).parents[2] / "etc"


def live3() -> dict[str, Liveness]:
    return {"h1": Liveness(0.4, 0.2), "h2": Liveness(2.5, 3.1), "h3": Liveness(None, 0.0)}


@pytest.fixture
def metrics(app: FastAPI, store: Store, clock: object) -> ControllerMetrics:
    m = ControllerMetrics(store, clock, per_host_limit=10, liveness=live3,  # type: ignore[arg-type]
                          heartbeats=lambda: {"accepted": 41, "bad_signature": 2, "replayed": 0})
    install(app, m)
    return m


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def finished_job(store: Store, t0: float = 1000.0) -> None:
    steps = (JobStep("fence:0:ipmi:off", "failed", t0 + 4, t0 + 4.5, "BMC unreachable"),
             JobStep("fence:1:redfish:off", "done", t0 + 4.5, t0 + 5),
             JobStep("fence:1:redfish:confirm", "done", t0 + 5, t0 + 6),
             JobStep("evacuate:a1@h2#1", "done", t0 + 6, t0 + 6.8),
             JobStep("verify:a1@h2#1", "done", t0 + 6.8, t0 + 11))
    store.create_job(Job(id="j1", kind=JobKind.HOST_RECOVERY, subject="h1", state=JobState.DONE,
                         steps=steps, created_at=t0 + 3, updated_at=t0 + 11,
                         data={"last_seen": t0}))
    store.append_events([Event(type="job.done", subject="j1", time=t0 + 11,
                               subject_kind=SubjectKind.JOB,
                               payload={"job": "j1", "kind": "host_recovery", "to": "done"})])


def test_scrape_needs_a_reading_token(seeded: TestClient, client_for: ClientFor,
                                      metrics: ControllerMetrics) -> None:
    assert client_for(None).get("/metrics").status_code == 401
    assert client_for("project:p1").get("/metrics").status_code == 403
    assert client_for("agent").get("/metrics").status_code == 403
    r = client_for("viewer").get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")


def test_state_gauges(seeded: TestClient, metrics: ControllerMetrics, store: Store) -> None:
    got = samples(seeded.get("/metrics").text)
    assert got[("vmha_hosts", (("segment", "seg-a"), ("state", "up")))] == 2
    assert got[("vmha_hosts", (("segment", "seg-b"), ("state", "failed")))] == 0
    assert got[("vmha_host_phi", (("host", "h2"),))] == 3.1
    assert got[("vmha_host_heartbeat_age_seconds", (("host", "h2"),))] == 2.5
    assert ("vmha_host_heartbeat_age_seconds", (("host", "h3"),)) not in got  # none heard
    assert got[("vmha_heartbeat_age_max_seconds", ())] == 2.5
    assert got[("vmha_heartbeats_received_total", ())] == 41
    assert got[("vmha_heartbeats_dropped_total", (("reason", "bad_signature"),))] == 2
    assert got[("vmha_store_up", ())] == 1
    assert got[("vmha_segment_recovery_paused", (("segment", "seg-a"),))] == 0
    store.create_job(Job(id="d1", kind=JobKind.DECISION, subject="a1"))
    got = samples(seeded.get("/metrics").text)
    assert got[("vmha_decisions_pending", ())] == 1
    assert got[("vmha_jobs", (("kind", "decision"), ("state", "pending")))] == 1


def test_per_host_series_stop_above_the_limit(seeded: TestClient, store: Store,
                                              app: FastAPI, clock: object) -> None:
    m = ControllerMetrics(store, clock, per_host_limit=2, liveness=live3)  # type: ignore[arg-type]
    install(app, m)
    text = seeded.get("/metrics").text
    assert "vmha_host_phi" not in text and "vmha_phi_max 3.1" in text


def test_recovery_histograms_fill_from_a_finished_job(seeded: TestClient, store: Store,
                                                      metrics: ControllerMetrics) -> None:
    metrics.start_at_end()
    finished_job(store)
    store.append_events([Event(type="host.fence_failed", subject="h3", time=2000.0,
                               subject_kind=SubjectKind.HOST, severity=Severity.ERROR),
                         Event(type="instance.unplaceable", subject="b1", time=2000.0)])
    assert metrics.poll() == 3
    got = samples(seeded.get("/metrics").text)
    for phase, took in (("detect", 3.0), ("fence", 2.0), ("dispatch", 0.8), ("verify", 4.2),
                        ("total", 11.0)):
        assert got[(f"vmha_recovery_{phase}_seconds_count", ())] == 1, phase
        assert got[(f"vmha_recovery_{phase}_seconds_sum", ())] == pytest.approx(took), phase
    assert got[("vmha_recovery_total_seconds_bucket", (("le", "10.0"),))] == 0
    assert got[("vmha_recovery_total_seconds_bucket", (("le", "15.0"),))] == 1
    fence = {k[1]: v for k, v in got.items() if k[0] == "vmha_fence_attempts_total"}
    assert fence[(("method", "ipmi"), ("phase", "off"), ("result", "failed"))] == 1
    assert fence[(("method", "redfish"), ("phase", "confirm"), ("result", "ok"))] == 1
    assert got[("vmha_jobs_finished_total", (("kind", "host_recovery"), ("state", "done")))] == 1
    assert got[("vmha_fence_failures_total", ())] == 1
    assert got[("vmha_recovery_failures_total", (("event", "instance.unplaceable"),))] == 1
    assert metrics.poll() == 0  # each event is counted once


def test_webhook_latency_and_dead_letters(seeded: TestClient,
                                          metrics: ControllerMetrics) -> None:
    event = Event(type="host.failed", subject="h1", time=100.0)
    metrics.delivered(event, "delivered", 100.02)
    metrics.delivered(event, "dead", 400.0)
    got = samples(seeded.get("/metrics").text)
    assert got[("vmha_webhook_delivery_seconds_count", ())] == 1
    assert got[("vmha_webhook_dead_letters_total", ())] == 1


def test_alert_rules_validate_withpromtool() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(ETC / "prometheus" /
                                                              "vmha-alerts.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SUCCESS: 5 rules found" in done.stdout, done.stdout + \
        done.stderr
    rules = (ETC / "prometheus" / "vmha-alerts.yml").read_text()
    for alert in ("SegmentRecoveryPaused", "FenceFailed", "RecoveryFailed", "ControllerNotReady"):
        assert f"alert: Vmha{alert}" in rules


def test_the_exposition_lints_and_etc_uses_only_exported_names(
    seeded: TestClient, store: Store, metrics: ControllerMetrics,
) -> None:
    finished_job(store)
    store.append_events([Event(type="instance.recovery_failed", subject="a1", time=2.0)])
    metrics.poll()
    metrics.delivered(Event(type="x", subject="s", time=1.0), "dead", 2.0)
    text = seeded.get("/metrics").text
    lint = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    dashboard = json.loads((ETC / "grafana" / "vmha-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((ETC / "prometheus" / "vmha-alerts.yml").read_text())
    used = {n for e in exprs for n in re.findall(r"\bvmha_[a-z_]+", e)}
    assert used and used <= exported, sorted(used - exported)
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))
