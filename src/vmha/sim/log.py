"""The simulation log: controller events, injected commands, world facts.

Line format (stable; golden files compare it line by line)::

    T.TTT  SUBJECT: MESSAGE

`T.TTT` is virtual seconds since the run start with millisecond precision,
right-aligned in 8 columns. MESSAGE is one of

- ``<event type> <payload reason>`` for an event the controller stored,
  e.g. ``  12.400  h1: host.suspect no heartbeat for 2.4 s``;
- ``inject <command>`` for a scenario command, e.g. ``inject power-off``;
- ``world <fact>`` for ground truth worth seeing (power, VMs, BMC, agent),
  e.g. ``world vm1 running on h2``;
- ``INVARIANT <name> broken: <what>`` when a safety rule was violated.

Lines are sorted by time (ms), then by the order they were recorded.
Written by the world, the store tap and the runner; pure bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vmha.domain.model import Event


@dataclass(frozen=True)
class LogLine:
    t: float
    seq: int
    subject: str
    message: str
    kind: str  # "event" | "inject" | "world" | "invariant"

    def render(self) -> str:
        return f"{self.t:8.3f}  {self.subject}: {self.message}"


class SimLog:
    def __init__(self, now: Callable[[], float], start: float = 0.0) -> None:
        self._now = now
        self._start = start
        self._lines: list[LogLine] = []
        self.events: list[tuple[float, Event]] = []

    def rel(self, t: float | None = None) -> float:
        """Seconds since the run start (now when `t` is None)."""
        return round((self._now() if t is None else t) - self._start, 3)

    def _add(self, t: float, subject: str, message: str, kind: str) -> None:
        self._lines.append(LogLine(t, len(self._lines), subject, message, kind))

    def world(self, subject: str, fact: str) -> None:
        self._add(self.rel(), subject, f"world {fact}", "world")

    def inject(self, subject: str, text: str) -> None:
        self._add(self.rel(), subject, f"inject {text}", "inject")

    def invariant(self, subject: str, name: str, what: str) -> None:
        self._add(self.rel(), subject, f"INVARIANT {name} broken: {what}", "invariant")

    def event(self, event: Event) -> None:
        t = self.rel(event.time)
        self.events.append((t, event))
        reason = str(event.payload.get("reason", "")).strip()
        message = f"{event.type} {reason}" if reason else event.type
        self._add(t, event.subject, message, "event")

    def lines(self) -> list[LogLine]:
        return sorted(self._lines, key=lambda line: (line.t, line.seq))

    def render(self) -> list[str]:
        return [line.render() for line in self.lines()]

    def events_json(self) -> list[dict[str, Any]]:
        return [
            {"t": t, "type": e.type, "subject": e.subject,
             "reason": str(e.payload.get("reason", ""))}
            for t, e in sorted(self.events, key=lambda pair: pair[0])
        ]
