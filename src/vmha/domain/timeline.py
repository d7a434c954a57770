"""A host-recovery job as phases with durations, from its recorded steps.

Used by the dashboard's job timeline and by the recovery-time metrics:
both read what the job executor recorded (`job.steps`, `job.data`), so
what an operator sees and what Prometheus counts are the same numbers.
Pure; times are the job's own (Unix seconds). A phase is drawn only when
the job recorded its steps: no time here is estimated.

Phases, each from its first step's start to its last step's end:
- detect: the host's last heartbeat (`data.last_seen`) to the job's start
  (the moment the host was confirmed failed);
- fence: every `fence:*` step (power-off and confirmation, all levels);
- force_down: the `disable_compute` step, the host taken out of the cloud's
  scheduling (OpenStack: its nova-compute service disabled and forced
  down; libvirt: nothing to do, vmha's planner reads host states);
- dispatch: every `evacuate:*` step, the cloud asked to start the instance
  on its target (libvirt: the target's agent defined and started the
  domain, so the phase ends with the domains running; OpenStack: Nova
  accepted the evacuation);
- running: the `verify:*` steps that waited for the cloud to report the
  instance running (or stopped, as its policy asks) on its target;
- app_answering: the `verify:*` steps that also waited for the
  instance's application to answer (libvirt with a `spec.health_url`: the
  cloud reads "running" only then). The verify step says so in its detail
  once done (`APP_ANSWERS`, written by vmha.engine.moves), so a verify
  step still under way is drawn under running; a job has either phase or
  both, by instance;
- total: last heartbeat to the end of the last step, once the job is done.

`duration("verify")` is every `verify:*` step together (running and
answering), the span behind the `vmha_recovery_verify_seconds` histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vmha.domain.jobs import HostRecoveryData
from vmha.domain.model import Job, JobState, JobStep

PHASES = ("detect", "fence", "force_down", "dispatch", "running", "app_answering")
LABELS = {"detect": "detect", "fence": "fence", "force_down": "force-down",
          "dispatch": "dispatch", "running": "running", "app_answering": "app answering"}
# In a verify step's detail: the cloud's "running" included the application answering.
APP_ANSWERS = "its application answers"
_VERIFY = "verify:"
_STEPS: dict[str, Callable[[str], bool]] = {"fence": lambda n: n.startswith("fence:"),
          "force_down": lambda n: n == "disable_compute",
          "dispatch": lambda n: n.startswith("evacuate:")}


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
    verify: Phase | None = None  # every verify step (running and answering)

    @property
    def total_s(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.origin)

    def duration(self, phase: str) -> float | None:
        if phase == "verify":
            return None if self.verify is None else self.verify.duration_s
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
    verify = [s for s in job.steps if s.name.startswith(_VERIFY)]
    chosen = {**{name: [s for s in job.steps if wanted(s.name)]
                 for name, wanted in _STEPS.items()},
              "running": [s for s in verify if APP_ANSWERS not in s.detail],
              "app_answering": [s for s in verify if APP_ANSWERS in s.detail]}
    for name in PHASES[1:]:
        span = _span(chosen[name])
        if span is not None:
            phases.append(Phase(name, *span))
    ends = [s.finished_at for s in job.steps if s.finished_at is not None]
    done = job.state is JobState.DONE
    end = max(ends, default=job.updated_at) if done else None
    every = _span(verify)
    return Timeline(origin, tuple(phases), tuple(job.steps), end,
                    None if every is None else Phase("verify", *every))


def _span(steps: Sequence[JobStep]) -> tuple[float, float | None] | None:
    if not steps:
        return None
    start = min(s.started_at for s in steps)
    if any(s.finished_at is None for s in steps):
        return start, None
    return start, max(s.finished_at for s in steps if s.finished_at is not None)
