"""Controller settings: every tunable of the detector, fencing and recovery.

Built by `vmha serve` from the configuration and by the simulator from a
scenario's `config:` mapping (`ControllerSettings.from_mapping`). A frozen
value passed down; nothing reads settings from a global.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vmha.domain.detector import DetectorConfig
from vmha.domain.errors import ValidationError
from vmha.domain.model import FENCE_METHODS
from vmha.domain.planner import SCHEDULER
from vmha.domain.restart import Backoff

Levels = tuple[tuple[str, ...], ...]
TARGETS = ("planner", SCHEDULER)


@dataclass(frozen=True)
class ControllerSettings:
    heartbeat_interval_s: float = 1.0
    # detector (see vmha.domain.detector for the math)
    phi_threshold: float = 5.0
    detector_min_std_s: float = 0.1
    detector_acceptable_pause_s: float = 0.25
    detector_window: int = 300
    detector_min_samples: int = 5
    detector_bootstrap_loss: float = 0.3
    detector_warmup_decay: float = 3.0
    detector_tick_s: float = 0.1  # how often the detector loop evaluates hosts
    # confirmation
    confirm_peers: int = 3  # peers asked to probe a suspect host
    peer_probe_timeout_s: float = 1.0
    bmc_status_timeout_s: float = 5.0
    confirm_retry_s: float = 2.0  # next round for inconclusive / partitioned hosts
    # confirmation rounds running at once, and started per confirm_retry_s; more
    # suspects than this (a mass failure) wait and stretch every host's retry
    confirm_rounds_per_retry: int = 25
    proof_retry_s: float = 10.0  # while fencing is paused: look for proof a failed host is dead
    # fencing
    fence_timeout_s: float = 10.0  # per fence attempt (power-off, then status reads)
    fence_poll_s: float = 1.0  # between power-status reads while confirming
    fence_retry_s: float = 60.0  # after every level failed
    fence_rate_burst: int = 1  # fences a segment may start at once
    fence_rate_interval_s: float = 30.0  # then one per this many seconds
    self_fence_deadline_s: float = 20.0  # agent isolation timeout + watchdog timeout + margin
    default_fence_levels: Levels = (("agent_watchdog",), ("manual",))
    # recovery
    max_parallel_evacuations: int = 4
    evacuate_timeout_s: float = 60.0
    verify_timeout_s: float = 30.0
    verify_poll_s: float = 1.0
    host_return_healthy_s: float = 30.0  # heartbeats for this long before a returning host is up
    # who picks each evacuation's target: vmha's planner, or the cloud's own
    # scheduler (`[openstack] target = "scheduler"`: Nova picks)
    evacuation_target: str = "planner"
    # guard
    mass_failure_window_s: float = 60.0
    # instance restarts
    restart_backoff_s: float = 10.0
    restart_backoff_max_s: float = 300.0
    # housekeeping
    job_poll_s: float = 1.0  # a waiting job re-checks at least this often
    store_refresh_s: float = 2.0  # hosts/segments re-read from the store

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "default_fence_levels":
                _check_levels(value)
            elif isinstance(value, int | float) and value <= 0:
                raise ValidationError(f.name, f"{value!r} must be greater than 0")
        if self.phi_threshold < 1:
            raise ValidationError("phi_threshold", "must be at least 1")
        if not 0 < self.detector_bootstrap_loss < 1:
            raise ValidationError("detector_bootstrap_loss", "must be in (0, 1)")
        if self.evacuation_target not in TARGETS:
            raise ValidationError("evacuation_target", f"{self.evacuation_target!r} is not one "
                                  f"of {', '.join(TARGETS)}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ControllerSettings:
        """Build from a scenario's `config:` mapping; unknown keys and bad
        values raise ValidationError naming the key."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ValidationError(
                    str(key), f"unknown controller setting; allowed: {', '.join(sorted(known))}"
                )
            default = getattr(cls, key)
            kwargs[key] = _coerce(key, value, default)
        return cls(**kwargs)

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            interval_s=self.heartbeat_interval_s,
            threshold=self.phi_threshold,
            min_std_s=self.detector_min_std_s,
            acceptable_pause_s=self.detector_acceptable_pause_s,
            window=self.detector_window,
            min_samples=self.detector_min_samples,
            bootstrap_loss=self.detector_bootstrap_loss,
            warmup_decay=self.detector_warmup_decay,
        )

    def backoff(self) -> Backoff:
        return Backoff(self.restart_backoff_s, self.restart_backoff_max_s)


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        return _levels(key, value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValidationError(key, f"{value!r} is not text")
        return value
    if isinstance(value, bool):
        raise ValidationError(key, f"{value!r} is not a number")
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(value, int):
            raise ValidationError(key, f"{value!r} is not a whole number")
        return value
    if not isinstance(value, int | float):
        raise ValidationError(key, f"{value!r} is not a number")
    return float(value)


def _levels(key: str, value: Any) -> Levels:
    """Accept [ipmi, agent_watchdog] (one method per level) or [[a, b], [c]]."""
    if not isinstance(value, list | tuple) or not value:
        raise ValidationError(key, "must be a non-empty list of fence levels")
    out = []
    for level in value:
        methods = (level,) if isinstance(level, str) else level
        if not isinstance(methods, list | tuple) or not all(isinstance(m, str) for m in methods):
            raise ValidationError(key, f"{level!r} is not a fence method or a list of them")
        out.append(tuple(methods))
    levels = tuple(out)
    _check_levels(levels, key)
    return levels


def _check_levels(levels: Levels, key: str = "default_fence_levels") -> None:
    for level in levels:
        for method in level:
            if method not in FENCE_METHODS:
                raise ValidationError(
                    key, f"{method!r} is not a fence method; allowed: {', '.join(FENCE_METHODS)}"
                )
