"""A host-recovery job as phases with durations, from its recorded steps.

Used by the dashboard's job timeline and by the recovery-time metrics:
both read what the job executor recorded (`job.steps`, `job.data`), so
what an operator sees and what Prometheus counts are the same numbers.
Pure; times are the job's own (Unix seconds).

Phases, each from its first step's start to its last step's end:
- detect: the host's last heartbeat (`data.last_seen`) to the job's start
  (the moment the host was confirmed failed);
- fence: every `fence:*` step (power-off and confirmation, all levels);
- dispatch: every `evacuate:*` step (the cloud was asked to start the
  instance on its target);
- verify: every `verify:*` step (running there, and its health URL
  answering where it has one);
- total: last heartbeat to the end of the last step, once the job is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmha.domain.jobs import HostRecoveryData
from vmha.domain.model import Job, JobState, JobStep

PHASES = ("detect", "fence", "dispatch", "verify")
_PREFIX = {"fence": "fence:", "dispatch": "evacuate:", "verify": "verify:"}


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float | None  # None: still running

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)


@dataclass(frozen=True)
class Timeline:
    origin: float  # the last heartbeat (or the job's start when unknown)
    phases: tuple[Phase, ...]
    steps: tuple[JobStep, ...]
    end: float | None  # when the last step ended, for a finished job

    @property
    def total_s(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.origin)

    def duration(self, phase: str) -> float | None:
        for p in self.phases:
            if p.name == phase:
                return p.duration_s
        return None


def timeline(job: Job) -> Timeline:
    """The phases of a host-recovery job (empty for other kinds)."""
    if not isinstance(job.data, HostRecoveryData):
        return Timeline(job.created_at, (), tuple(job.steps), None)
    origin = job.data.last_seen or job.created_at
    phases = [Phase("detect", origin, job.created_at)]
    for name, prefix in _PREFIX.items():
        span = _span([s for s in job.steps if s.name.startswith(prefix)])
        if span is not None:
            phases.append(Phase(name, *span))
    ends = [s.finished_at for s in job.steps if s.finished_at is not None]
    done = job.state is JobState.DONE
    end = max(ends, default=job.updated_at) if done else None
    return Timeline(origin, tuple(phases), tuple(job.steps), end)


def _span(steps: Sequence[JobStep]) -> tuple[float, float | None] | None:
    if not steps:
        return None
    start = min(s.started_at for s in steps)
    if any(s.finished_at is None for s in steps):
        return start, None
    return start, max(s.finished_at for s in steps if s.finished_at is not None)
