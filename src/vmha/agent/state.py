"""The agent's small state file: survives agent restarts, not needed for them.

`AgentState` lives in `state_dir/agent-state.json` (mode 0600, written
atomically). It holds the boot counter and current boot id (so an operator
sees how often the agent restarted), the time of its last contact (so a
restarted agent does not grant itself a fresh isolation window; written at
most every few heartbeats, so it may be older than the truth, which only
makes the agent fence sooner) and the per-host secret obtained by
registration, so a restarted agent needs no second registration. Losing
the file is harmless: the agent registers again (idempotent) and starts a
new boot id.

Called by the agent at start; nothing else writes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "agent-state.json"


@dataclass(frozen=True)
class AgentState:
    boot_count: int = 0
    boot_id: str = ""  # hex of the 8-byte boot id in heartbeats
    secret: str = ""  # from registration; empty when pre-shared
    segment_secret: str = ""
    last_contact: float = 0.0  # Clock time of the last controller/peer contact


def load_json(state_dir: Path, name: str) -> object | None:
    """A JSON file of the state directory; None when missing or damaged."""
    try:
        loaded: object = json.loads((state_dir / name).read_text())
    except (OSError, ValueError):
        return None
    return loaded


def save_json(state_dir: Path, name: str, data: object) -> None:
    """Write atomically (temporary file + rename), mode 0600."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, state_dir / name)


def load_state(state_dir: Path) -> AgentState:
    data = load_json(state_dir, FILE_NAME)
    if not isinstance(data, dict):
        return AgentState()  # missing or damaged: start afresh
    try:
        return AgentState(**{k: data[k] for k in AgentState.__dataclass_fields__ if k in data})
    except TypeError:
        return AgentState()


def save_state(state_dir: Path, state: AgentState) -> None:
    save_json(state_dir, FILE_NAME, asdict(state))
