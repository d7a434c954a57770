"""The per-instance HA policy: what to do at each failure layer.

A policy is a frozen value validated on construction; `HAPolicy.from_dict`
builds one from plain data (API bodies, scenario files, stored JSON) and
names the offending field on error, `to_dict` gives the plain form back.

Standard library only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vmha.domain.errors import ValidationError

PRIORITY_MIN, PRIORITY_MAX = 0, 1000


class LayerMode(str, enum.Enum):
    """What vmha does when a layer fails."""

    AUTO = "auto"  # recover automatically
    NOTIFY = "notify"  # publish the event, do nothing else
    AUTO_NOTIFY = "auto+notify"  # recover and publish every step
    CUSTOM = "custom"  # ask the user's hook, fall back after a deadline
    OFF = "off"  # ignore this layer

    @property
    def recovers(self) -> bool:
        return self in (LayerMode.AUTO, LayerMode.AUTO_NOTIFY)


class WatchdogAction(str, enum.Enum):
    """Guest watchdog action; the first three are applied by the hypervisor."""

    RESET = "reset"
    POWEROFF = "poweroff"
    PAUSE = "pause"
    NONE = "none"
    NOTIFY = "notify"  # hypervisor does nothing; vmha publishes instance.watchdog
    RESET_NOTIFY = "reset+notify"
    RESTART = "restart"  # destroy + start, for guests whose reset loops


class CustomFallback(str, enum.Enum):
    AUTO = "auto"
    NONE = "none"


class ProbeKind(str, enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"


@dataclass(frozen=True)
class Probe:
    """An application probe. `target`: URL (http), port (tcp), command (exec)."""

    kind: ProbeKind
    target: str
    interval_s: float = 10.0
    timeout_s: float = 2.0
    failure_threshold: int = 3

    def __post_init__(self) -> None:
        if not self.target:
            raise ValidationError("target", "must not be empty")
        if self.kind is ProbeKind.HTTP and not self.target.startswith(("http://", "https://")):
            raise ValidationError("target", f"{self.target!r} is not an http(s) URL")
        if self.kind is ProbeKind.TCP and not (
            self.target.isdigit() and 0 < int(self.target) < 65536
        ):
            raise ValidationError("target", f"{self.target!r} is not a TCP port (1-65535)")
        if not 0 < self.interval_s <= 3600:
            raise ValidationError("interval_s", "must be in (0, 3600]")
        if not 0 < self.timeout_s <= self.interval_s:
            raise ValidationError("timeout_s", "must be positive and at most interval_s")
        if not 1 <= self.failure_threshold <= 100:
            raise ValidationError("failure_threshold", "must be 1 to 100")


@dataclass(frozen=True)
class HAPolicy:
    """HA settings of one instance (or a segment's default)."""

    host: LayerMode = LayerMode.AUTO
    guest: LayerMode = LayerMode.AUTO
    app: LayerMode = LayerMode.NOTIFY
    priority: int = 500
    max_restarts: int = 3
    window_s: float = 600.0
    evacuate_to_stopped: bool = False
    watchdog_action: WatchdogAction = WatchdogAction.RESET
    probes: tuple[Probe, ...] = ()
    custom_deadline_s: float = 30.0
    custom_fallback: CustomFallback = CustomFallback.AUTO

    def __post_init__(self) -> None:
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise ValidationError(
                "priority", f"{self.priority} is outside {PRIORITY_MIN}..{PRIORITY_MAX}"
            )
        if not 0 <= self.max_restarts <= 1000:
            raise ValidationError("max_restarts", "must be 0 to 1000")
        if not 0 < self.window_s <= 86400 * 7:
            raise ValidationError("window_s", "must be in (0, 604800] seconds")
        if not 0 < self.custom_deadline_s <= 3600:
            raise ValidationError("custom_deadline_s", "must be in (0, 3600] seconds")

    @property
    def protected(self) -> bool:
        """Whether a host failure should bring this instance back."""
        return self.host.recovers

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HAPolicy:
        """Build from plain data; unknown keys and bad values name the field."""
        if not isinstance(data, Mapping):
            raise ValidationError("policy", "must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                unknown[0], f"unknown policy key; allowed: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = {}
        enums: dict[str, type[enum.Enum]] = {
            "host": LayerMode,
            "guest": LayerMode,
            "app": LayerMode,
            "watchdog_action": WatchdogAction,
            "custom_fallback": CustomFallback,
        }
        for key, value in data.items():
            if key in enums:
                kwargs[key] = _enum(enums[key], key, value)
            elif key == "probes":
                kwargs[key] = tuple(_probe(i, p) for i, p in enumerate(value or ()))
            elif key == "evacuate_to_stopped":
                kwargs[key] = _bool(key, value)
            elif key in ("priority", "max_restarts"):
                kwargs[key] = _int(key, value)
            else:
                kwargs[key] = _float(key, value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif f.name == "probes":
                value = [
                    {**{k.name: getattr(p, k.name) for k in fields(p)}, "kind": p.kind.value}
                    for p in value
                ]
            out[f.name] = value
        return out


DEFAULT_POLICY = HAPolicy()


def _enum(kind: type[enum.Enum], key: str, value: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise ValidationError(key, f"{value!r} is not one of {allowed}") from None


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(key, f"{value!r} is not a whole number")
    return value


def _float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(key, f"{value!r} is not a number")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(key, f"{value!r} is not true or false")
    return value


def _probe(index: int, data: Any) -> Probe:
    where = f"probes[{index}]"
    if not isinstance(data, Mapping):
        raise ValidationError(where, "must be a mapping")
    allowed = {f.name for f in fields(Probe)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", "unknown probe key")
    try:
        return Probe(
            kind=_enum(ProbeKind, f"{where}.kind", data.get("kind")),
            target=str(data.get("target", "")),
            interval_s=_float(f"{where}.interval_s", data.get("interval_s", 10.0)),
            timeout_s=_float(f"{where}.timeout_s", data.get("timeout_s", 2.0)),
            failure_threshold=_int(
                f"{where}.failure_threshold", data.get("failure_threshold", 3)
            ),
        )
    except ValidationError as exc:
        if exc.field.startswith(where):
            raise
        raise ValidationError(f"{where}.{exc.field}", exc.reason) from None

