"""What the agent probes, and when a run of results is a state change.

The controller's probe document (`GET /v1/agents/{host}/probes`, built by
`vmha.api.routes.agents`) lists, for each instance recorded on this host,
its domain UUID, its application probes (the policy's `Probe`s, tcp
targets already resolved to HOST:PORT) and its guest-agent ping settings:

    {"instances": [{"domain": "<uuid>", "instance": "<id>", "name": "vm1",
                    "probes": [{"kind": "http", "target": "http://…", …}],
                    "guest_ping": {"interval_s": 5.0, "failures": 3} | null}]}

`parse_document` turns it into `Watched` values; an entry the agent cannot
use is logged and skipped, never fatal. `AppHealth` and `PingHealth` count
results and say when the application failed or recovered and when the
guest agent became unresponsive or answered again: those changes, and only
those, are reported to the controller (`Report`). `ProbeCounts` counts
every result and report for the agent's `/v1/metrics`. Pure: no I/O, no
clock. Used by `vmha.agent.prober`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vmha.agent.domains import canonical_uuid
from vmha.domain.probes import Probe, ProbeKind, probe_from_dict
from vmha.errors import ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PingSpec:
    interval_s: float
    failures: int

    @property
    def timeout_s(self) -> float:
        """Each ping may take this long (whole seconds for libvirt)."""
        return max(1.0, min(2.0, self.interval_s / 2))


@dataclass(frozen=True)
class Watched:
    """What to check on one domain."""

    domain: str  # libvirt UUID
    instance: str
    name: str
    probes: tuple[Probe, ...] = ()
    ping: PingSpec | None = None


def _ping(data: Any) -> PingSpec | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValidationError("guest_ping", "must be a mapping or null")
    interval, failures = data.get("interval_s"), data.get("failures")
    if not isinstance(interval, int | float) or not 1 <= interval <= 3600:
        raise ValidationError("guest_ping.interval_s", f"{interval!r} is not in [1, 3600]")
    if not isinstance(failures, int) or not 1 <= failures <= 100:
        raise ValidationError("guest_ping.failures", f"{failures!r} is not in 1..100")
    return PingSpec(float(interval), failures)


def parse_entry(data: Any) -> Watched:
    if not isinstance(data, Mapping):
        raise ValidationError("instances[]", "must be a mapping")
    probes = data.get("probes") or []
    if not isinstance(probes, list):
        raise ValidationError("probes", "must be a list")
    return Watched(
        domain=canonical_uuid(str(data.get("domain", ""))), instance=str(data.get("instance", "")),
        name=str(data.get("name", "")),
        probes=tuple(probe_from_dict(p, f"probes[{i}]") for i, p in enumerate(probes)),
        ping=_ping(data.get("guest_ping")))


def parse_document(data: Any) -> dict[str, Watched]:
    """Domain UUID -> what to check; unusable entries are logged and left out."""
    entries = data.get("instances") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        log.error("probe document without an instances list ignored")
        return {}
    out: dict[str, Watched] = {}
    for entry in entries:
        try:
            watched = parse_entry(entry)
        except ValidationError as exc:
            name = entry.get("name", "?") if isinstance(entry, Mapping) else "?"
            log.error("probes of instance %s ignored: %s", name, exc.detail)
            continue
        out[watched.domain] = watched
    return out


@dataclass(frozen=True)
class Report:
    """A state change for the controller: kind app_failed, app_recovered,
    guest_unresponsive or guest_responsive."""

    kind: str
    probe: str
    detail: str  # the last error ("" when it recovered)
    count: int  # failures (or successes) in a row behind the change


REPORT_KINDS = ("app_failed", "app_recovered", "guest_unresponsive", "guest_responsive")


class ProbeCounts:
    """Every check result and report since the agent started, for
    `/v1/metrics` (vmha.agent.metrics). Bumped where a result arrives: an
    item of a list made once, so a check allocates nothing and takes no
    lock (one event loop). Index 0 counts failures, 1 successes."""

    __slots__ = ("checks", "pings", "reports")

    def __init__(self) -> None:
        self.checks: dict[ProbeKind, list[int]] = {kind: [0, 0] for kind in ProbeKind}
        self.pings = [0, 0]
        self.reports = dict.fromkeys(REPORT_KINDS, 0)


@dataclass
class Counter:
    """Consecutive results of one check."""

    failing: bool = False
    failures: int = 0
    successes: int = 0
    last_error: str = ""

    def record(self, ok: bool, error: str, fail_after: int, pass_after: int,
               counting: bool = True) -> str | None:
        """"failed", "recovered" or None; `counting` False: a failure is not
        counted (the guest is still booting)."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.failing and self.successes >= pass_after:
                self.failing = False
                return "recovered"
            return None
        self.successes = 0
        self.last_error = error
        if not counting:
            return None
        self.failures += 1
        if not self.failing and self.failures >= fail_after:
            self.failing = True
            return "failed"
        return None

    def restart(self) -> None:
        """The guest (re)booted: counts start again, the verdict stays."""
        self.failures = self.successes = 0


@dataclass
class AppHealth:
    """One instance's application: failed once a probe crossed its failure
    threshold, recovered once every failing probe passed its success
    threshold. `failed` may start true (remembered across agent restarts)."""

    failed: bool = False
    counters: dict[str, Counter] = field(default_factory=dict)

    def record(self, probe: Probe, ok: bool, error: str, counting: bool) -> Report | None:
        counter = self.counters.setdefault(probe.name, Counter(failing=self.failed))
        change = counter.record(ok, error, probe.failure_threshold, probe.success_threshold,
                                counting)
        if change == "failed" and not self.failed:
            self.failed = True
            return Report("app_failed", probe.name, error, counter.failures)
        if change == "recovered" and self.failed and not self.failing_probes():
            self.failed = False
            return Report("app_recovered", probe.name, "", counter.successes)
        return None

    def failing_probes(self) -> list[str]:
        return [name for name, c in self.counters.items() if c.failing]

    def keep_only(self, probes: tuple[Probe, ...]) -> Report | None:
        """The policy changed: forget removed probes. A failed application
        with no probe left, or whose remaining probes all pass, recovered."""
        removed = [n for n in self.counters if n not in {p.name for p in probes}]
        for name in removed:
            del self.counters[name]
        if not self.failed or not (removed or not probes):
            return None
        passing = all(p.name in self.counters and not self.counters[p.name].failing
                      for p in probes)
        if probes and not passing:
            return None
        self.failed = False
        return Report("app_recovered", removed[0] if removed else "",
                      "its failing probes were removed from the policy", 0)

    def restart(self) -> None:
        for counter in self.counters.values():
            counter.restart()


@dataclass
class PingHealth:
    """The guest agent's heartbeat: failures count only once the agent has
    answered (or connected) since the guest's last boot."""

    unresponsive: bool = False
    seen: bool = False
    counter: Counter = field(default_factory=Counter)

    def record(self, spec: PingSpec, ok: bool, error: str) -> Report | None:
        if ok:
            self.seen = True
        self.counter.failing = self.unresponsive
        change = self.counter.record(ok, error, spec.failures, 1, counting=self.seen)
        if change == "failed":
            self.unresponsive = True
            return Report("guest_unresponsive", "guest-ping", error, self.counter.failures)
        if change == "recovered":
            self.unresponsive = False
            return Report("guest_responsive", "guest-ping", "", 1)
        return None

    def restart(self) -> None:
        """A (re)boot: wait for the agent to connect before counting."""
        self.seen = False
        self.counter.restart()
