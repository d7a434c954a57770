"""The per-instance HA policy: what to do at each failure layer.

A policy is a frozen value validated on construction; `HAPolicy.from_dict`
builds one from plain data (API bodies, scenario files, stored JSON) and
names the offending field on error, `to_dict` gives the plain form back.

Standard library only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from vmha.domain.errors import ValidationError
from vmha.domain.parse import boolean, enum_value, number, whole
from vmha.domain.probes import (
    AppStep,
    Probe,
    ProbeKind,
    guest_agent_fields,
    parse_steps,
    probe_from_dict,
    probe_to_dict,
    split_tcp,
)
from vmha.domain.spec import InstanceSpec

__all__ = ["DEFAULT_POLICY", "AppStep", "CustomFallback", "HAPolicy", "LayerMode", "Probe",
           "ProbeKind", "WatchdogAction", "agent_watch", "check_cloud", "check_fits"]

PRIORITY_MIN, PRIORITY_MAX = 0, 1000
PROBES_MAX = 16


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
    # The application escalation: each step runs when the application is
    # still failing `app_grace_s` after the previous one.
    app_actions: tuple[AppStep, ...] = (AppStep("reset"),)
    app_grace_s: float = 30.0
    # Guest-agent heartbeat (guest-ping) every `guest_ping_s` (0: off); this
    # many missed in a row make the guest `unresponsive` (guest layer).
    guest_ping_s: float = 5.0
    guest_ping_failures: int = 3

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
        if not self.app_actions:
            raise ValidationError("app_actions", "must list at least one step")
        if not 0 < self.app_grace_s <= 3600:
            raise ValidationError("app_grace_s", "must be in (0, 3600] seconds")
        if self.guest_ping_s != 0 and not 1 <= self.guest_ping_s <= 3600:
            raise ValidationError("guest_ping_s", "must be 0 (off) or in [1, 3600] seconds")
        if not 1 <= self.guest_ping_failures <= 100:
            raise ValidationError("guest_ping_failures", "must be 1 to 100")

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
                kwargs[key] = enum_value(enums[key], key, value)
            elif key == "probes":
                kwargs[key] = _probes(value)
            elif key == "app_actions":
                kwargs[key] = parse_steps(value)
            elif key == "evacuate_to_stopped":
                kwargs[key] = boolean(key, value)
            elif key in ("priority", "max_restarts", "guest_ping_failures"):
                kwargs[key] = whole(key, value)
            else:
                kwargs[key] = number(key, value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif f.name == "probes":
                value = [probe_to_dict(p) for p in value]
            elif f.name == "app_actions":
                value = [str(step) for step in value]
            out[f.name] = value
        return out


DEFAULT_POLICY = HAPolicy()


def _probes(value: Any) -> tuple[Probe, ...]:
    if value is None:
        return ()
    if isinstance(value, str | Mapping) or not isinstance(value, list | tuple):
        raise ValidationError("probes", "must be a list of probes")
    if len(value) > PROBES_MAX:
        raise ValidationError("probes", f"at most {PROBES_MAX} probes per policy")
    return tuple(probe_from_dict(p, f"probes[{i}]") for i, p in enumerate(value))


def check_fits(policy: HAPolicy, spec: InstanceSpec | None) -> None:
    """What `policy` asks of the guest exists in its definition `spec`:
    exec probes and exec steps need the QEMU guest agent channel, a tcp
    probe without a host needs the spec's address (ValidationError naming
    the policy field). Without a spec (the cloud defines the guest) nothing
    can be checked here."""
    if spec is None:
        return
    needs_agent = guest_agent_fields(policy.probes, policy.app_actions)
    if needs_agent and not spec.guest_agent:
        raise ValidationError(needs_agent[0], "exec needs the QEMU guest agent channel, and the "
                              "domain XML has none: add <channel type='unix'><target "
                              "type='virtio' name='org.qemu.guest_agent.0'/></channel> to its "
                              "<devices> (and run qemu-ga in the guest)")
    for index, probe in enumerate(policy.probes):
        if probe.kind is ProbeKind.TCP and not split_tcp(probe.target)[0] and not spec.ip:
            raise ValidationError(f"probes[{index}].target", f"{probe.target!r} names no host "
                                  "and the instance's spec has no address: give HOST:PORT")


def check_cloud(policy: HAPolicy, can_rebuild: bool) -> None:
    """The configured cloud can run every step of `policy`'s escalation:
    `rebuild` needs one that rebuilds instances (OpenStack's Nova);
    ValidationError naming the step otherwise."""
    for index, step in enumerate(policy.app_actions):
        if step.kind == "rebuild" and not can_rebuild:
            raise ValidationError(f"app_actions[{index}]", "rebuild needs the OpenStack "
                                  "adapter (Nova rebuilds the server from its image); the "
                                  "configured cloud cannot rebuild an instance: use reset or "
                                  "restart")


def agent_watch(policy: HAPolicy, address: str) -> dict[str, Any] | None:
    """What a host agent checks on an instance with `policy` (its entry in
    the agent's probe document, ids aside), or None when nothing: the probes
    unless the app layer is off (a tcp probe without a host gets the
    instance's `address`, and is left out without one), and the guest-agent
    ping unless the guest layer is off or `guest_ping_s` is 0."""
    probes = []
    if policy.app is not LayerMode.OFF:
        for probe in policy.probes:
            if probe.kind is ProbeKind.TCP and not split_tcp(probe.target)[0]:
                if not address:
                    continue
                host = f"[{address}]" if ":" in address else address
                probe = replace(probe, target=f"{host}:{probe.target}")
            probes.append(probe_to_dict(probe))
    ping = None
    if policy.guest is not LayerMode.OFF and policy.guest_ping_s > 0:
        ping = {"interval_s": policy.guest_ping_s, "failures": policy.guest_ping_failures}
    if not probes and ping is None:
        return None
    return {"probes": probes, "guest_ping": ping}
