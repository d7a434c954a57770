"""Heartbeats into the detector, and the controller's own load.

Used by the Controller on every detector tick: `pull()` applies the
heartbeats the intake verified since the last tick (each at the time the
kernel received it, so a late tick changes nothing) and returns how far the
intake has read — the detector judges silence only up to there, so the
controller's own backlog is never read as the hosts' silence. `watch()`
feeds the overload rule (`vmha.domain.overload`) and records
`controller.overloaded` / `controller.overload_ended` events. When the
kernel dropped heartbeats (the socket's buffer was full), no host's silence
counts before the first heartbeat read after the drop (`lost_until`).

Without a source (the simulator, tests pushing `Controller.heartbeat`)
heartbeats arrive one by one and the intake is always caught up.
"""

from __future__ import annotations

import logging
from typing import Any

from vmha.domain.model import Event, Severity, SubjectKind
from vmha.domain.overload import Load, OverloadLimits, OverloadWatch
from vmha.engine.detection import HostMonitor
from vmha.engine.state import Cluster
from vmha.ports import HeartbeatSource

log = logging.getLogger("vmha.engine")


class Intake:
    def __init__(self, source: HeartbeatSource | None, cluster: Cluster,
                 limits: OverloadLimits | None = None) -> None:
        self.source = source
        self.cluster = cluster
        self.watcher = OverloadWatch(limits)
        self.heard_until = 0.0
        self.tick_lag_s = 0.0
        self.applied = 0  # heartbeats handed to the detector

    def pull(self, monitor: HostMonitor, now: float) -> float:
        """Apply what arrived; the time up to which the detector may judge."""
        if self.source is None:
            self.heard_until = now
            return now
        batch = self.source.take()
        monitor.lost_until = max(monitor.lost_until, batch.lost_until)
        for host, seq, sent_at, arrived_at in batch.arrivals:
            monitor.heartbeat(host, seq, sent_at, arrived_at)
        self.applied += len(batch.arrivals)
        self.heard_until = min(now, batch.read_until)
        return self.heard_until

    def watch(self, now: float, tick_lag_s: float) -> None:
        """Say when the controller starts or stops being overloaded."""
        self.tick_lag_s = tick_lag_s
        drops = self.source.stats().get("kernel_drops", 0) if self.source else 0
        load = Load(max(0.0, now - self.heard_until), tick_lag_s, drops)
        change = self.watcher.observe(now, load)
        if change is None:
            return
        if change.overloaded:
            log.warning("controller overloaded: %s; hosts are judged only on what was "
                        "read", change.reason)
            etype, severity = "controller.overloaded", Severity.WARNING
        else:
            log.info("controller no longer overloaded: %s", change.reason)
            etype, severity = "controller.overload_ended", Severity.INFO
        self.cluster.append([Event(
            type=etype, subject="controller", time=now, subject_kind=SubjectKind.SEGMENT,
            severity=severity, payload={"reason": change.reason,
                                        "intake_lag_s": round(load.intake_lag_s, 3),
                                        "tick_lag_s": round(tick_lag_s, 3)})])

    def status(self, now: float) -> dict[str, Any]:
        """For the API and metrics: the overload flag and the intake's counters."""
        return {
            "overloaded": self.watcher.overloaded,
            "overload_reason": self.watcher.reason,
            "intake_lag_s": round(max(0.0, now - self.heard_until), 3),
            "tick_lag_s": round(self.tick_lag_s, 3),
            "heartbeats_applied": self.applied,
            "heartbeats": dict(self.source.stats()) if self.source else {},
        }
