"""What a lab test says when a host does not come back.

A lab e2e test that waits for a host to be up again and times out used to
say only "timed out"; this module gathers what the controller knows about
the host (its record, its jobs) and the last log lines about it, so a
failure in CI can be understood from its output alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_LINES = 12


def _tail(path: Path, needle: str | None, lines: int = LOG_LINES) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return [f"({path}: {exc.strerror})"]
    picked = [ln for ln in text if (needle is None or needle in ln) and "HTTP/1.1" not in ln]
    return picked[-lines:]


def host_story(get: Callable[[str], Any], lab_dir: Path, host: str) -> str:
    """The host's record and jobs as the API has them, then the controller
    log lines naming it and the tail of its agent's log."""
    parts: list[str] = []
    for path in (f"/v1/hosts/{host}", f"/v1/jobs?subject={host}&limit=5&sort=created_at&desc=true"):
        try:
            parts.append(f"GET {path}: {json.dumps(get(path), default=str)[:1500]}")
        except Exception as exc:  # a diagnostic never hides the failure
            parts.append(f"GET {path}: {type(exc).__name__}: {exc}")
    for log in sorted({*lab_dir.glob("controller*/serve.log"),
                       *lab_dir.glob("controller*/*/serve.log")}):
        parts.append(f"{log.relative_to(lab_dir)} (lines naming {host}):")
        parts.extend("  " + ln for ln in _tail(log, host))
    agent_log = lab_dir / "hosts" / host / "agent.log"
    parts.append(f"{agent_log.relative_to(lab_dir)} (last lines):")
    parts.extend("  " + ln for ln in _tail(agent_log, None))
    return "\n".join(parts)
