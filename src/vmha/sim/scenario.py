"""Scenario files for `vmha sim run`: parse and validate YAML into values.

A scenario is data: a seed, controller settings, simulator settings, the
cluster (segments, hosts, instances) and a list of timed fault commands.
`load_scenario(path)` / `parse_scenario(text)` / `scenario_from_data(dict)`
return a frozen `Scenario` or
raise `ValidationError` whose field is the path of the bad key, e.g.
``commands[3].do: unknown command 'powr-off h1'; allowed: power-off H, ...``.

Format (top-level keys)::

    seed: 1                 # randomness for loss/jitter (overridden by --seed)
    config: {...}           # ControllerSettings keys (checked by the engine)
    sim: {...}              # simulator-only settings, see SimSettings below
    segments: {s1: {recovery_method: auto, mass_failure_threshold: 0.5,
                    hold_recovered_hosts: false, enabled: true}}
    hosts: {h1: {segment: s1, vcpus: 16, ram_mb: 65536, disk_gb: 0,
                 fence: [ipmi, agent_watchdog], reserved: false,
                 maintenance: false}}
    instances: {vm1: {host: h1, vcpus: 2, ram_mb: 4096, priority: 100,
                      anti_affinity_group: g1, policy: {...HAPolicy keys}}}
    commands: [{at: 10, do: power-off h1}, ...]

A `fence` entry is a method name or a list of names (one level whose
methods must all confirm). Default fence levels: [ipmi, agent_watchdog].

Called by the runner and the CLI; no I/O besides reading the file, no
knowledge of the engine (controller settings are validated by the runner).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vmha.domain.decisions import ACTIONS
from vmha.domain.model import (
    FENCE_METHODS,
    Capacity,
    Host,
    Instance,
    RecoveryMethod,
    Segment,
)
from vmha.domain.policy import HAPolicy
from vmha.errors import ValidationError

DEFAULT_FENCE: tuple[tuple[str, ...], ...] = (("ipmi",), ("agent_watchdog",))

# verb -> (usage shown in errors, target kind, allowed actions or None)
COMMAND_USAGE: dict[str, str] = {
    "power-off": "power-off H",
    "power-on": "power-on H",
    "network": "network H down|up|loss P|delay MS [JITTER_MS]",
    "controller-link": "controller-link H down|up",
    "bmc": "bmc H unreachable|ok|stuck-on",
    "agent": "agent H crash|start",
    "guest": "guest VM panic|hang|freeze|ok",
    "app": "app VM fail|fail-hard|ok",
    "vm": "vm VM crash",
    "maintenance": "maintenance H on|off",
    "compute": "compute H fail-moves|refuse-enable|ok",
    "controller": "controller restart",
    "decide": "decide VM ACTION",
    "action": "action VM ACTION [H]",
    "operator": "operator fence-ack H [force]|fence H [METHOD]|resume S",
}
ALLOWED_COMMANDS = ", ".join(COMMAND_USAGE.values())

_ACTIONS: dict[str, tuple[str, ...]] = {
    "network": ("down", "up", "loss", "delay"),
    "controller-link": ("down", "up"),
    "bmc": ("unreachable", "ok", "stuck-on"),
    "agent": ("crash", "start"),
    "guest": ("panic", "hang", "freeze", "ok"),
    "app": ("fail", "fail-hard", "ok"),
    "vm": ("crash",),
    "maintenance": ("on", "off"),
    "compute": ("fail-moves", "refuse-enable", "ok"),
}
_HOST_VERBS = ("power-off", "power-on", "network", "controller-link", "bmc", "agent",
               "maintenance", "compute")
_VM_VERBS = ("guest", "app", "vm")


ISOLATION_ACTIONS = ("reboot", "none")


@dataclass(frozen=True)
class SimSettings:
    """Simulator-only knobs (the `sim:` section). Times in seconds."""

    # the agent's [isolation] timeout_s: no contact for this long after the
    # last contact expired, and it takes its isolation action
    agent_isolation_timeout_s: float = 10.0
    agent_contact_window_s: float = 0.0  # a contact lasts this; 0: 3 heartbeat intervals
    agent_watchdog_timeout_s: float = 5.0  # host resets this long after the last feed
    agent_send_jitter_s: float = 0.02  # +- on each heartbeat period
    network_base_delay_ms: float = 0.5  # one-way latency of a healthy link
    bmc_status_s: float = 0.05  # a power status read
    bmc_accept_s: float = 0.2  # a power-off/on request is accepted after this
    bmc_power_off_min_s: float = 1.0  # then the host goes dark after min..max more
    bmc_power_off_max_s: float = 1.8
    bmc_timeout_s: float = 5.0  # an unreachable BMC fails after this
    host_boot_s: float = 20.0  # power-on until the agent runs again
    vm_start_s: float = 1.0  # start/reset of a domain returns after this
    cloud_timeout_s: float = 10.0  # a call to a dead/unreachable host fails after this
    guest_watchdog_s: float = 3.0  # a hung guest's watchdog fires after this
    app_detect_s: float = 30.0  # app failure noticed after this (when no probe given)
    guest_exec_s: float = 0.5  # an in-guest command (the app's restart) takes this long
    event_retry_s: float = 1.0  # agent resends undelivered guest events after this
    # what a cut-off agent does: `reboot` (stop feeding its watchdog) or
    # `none` (always feed: the host is never self-fenced; its fence levels
    # must then not count on agent_watchdog)
    agent_isolation_action: str = "reboot"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "sim") -> SimSettings:
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ValidationError(
                    f"{where}.{key}",
                    f"unknown simulator setting; allowed: {', '.join(sorted(known))}",
                )
            if key == "agent_isolation_action":
                if value not in ISOLATION_ACTIONS:
                    raise ValidationError(f"{where}.{key}", f"{value!r} is not one of "
                                          f"{', '.join(ISOLATION_ACTIONS)}")
                kwargs[key] = value
                continue
            kwargs[key] = _number(f"{where}.{key}", value, minimum=0.0)
        settings = cls(**kwargs)
        if settings.bmc_power_off_max_s < settings.bmc_power_off_min_s:
            raise ValidationError(f"{where}.bmc_power_off_max_s", "must be >= bmc_power_off_min_s")
        return settings


@dataclass(frozen=True)
class Command:
    """One injected fault or operator action, applied at virtual time `at`.

    `verb` is the first word, `target` the host/instance/segment it acts on
    ("" for `controller restart`), `action` the sub-command (e.g. "loss"),
    `numbers` any numeric arguments (percent, milliseconds)."""

    index: int
    at: float
    text: str
    verb: str
    target: str
    action: str = ""
    numbers: tuple[float, ...] = ()


@dataclass(frozen=True)
class Scenario:
    seed: int
    config: Mapping[str, Any]
    sim: SimSettings
    segments: tuple[Segment, ...]
    hosts: tuple[Host, ...]
    instances: tuple[Instance, ...]
    commands: tuple[Command, ...]
    name: str = ""
    last_command_at: float = field(default=0.0)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; ValidationError names the problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValidationError(str(p), f"cannot read the scenario file: {exc.strerror}") from exc
    return parse_scenario(text, name=p.parent.name if p.name == "scenario.yaml" else p.stem)


def parse_scenario(text: str, name: str = "") -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError("", f"not valid YAML: {exc}") from exc
    return scenario_from_data(data, name)


def scenario_from_data(data: Any, name: str = "") -> Scenario:
    """Validate already-parsed scenario data (e.g. built by a test)."""
    if not isinstance(data, Mapping):
        raise ValidationError("", "a scenario must be a mapping with segments, hosts, ...")
    allowed = ("seed", "config", "sim", "segments", "hosts", "instances", "commands")
    for key in data:
        if key not in allowed:
            raise ValidationError(str(key), f"unknown top-level key; allowed: {', '.join(allowed)}")
    seed = _int("seed", data.get("seed", 0))
    config = _mapping("config", data.get("config") or {})
    sim = SimSettings.from_mapping(_mapping("sim", data.get("sim") or {}))
    segments = _segments(_mapping("segments", data.get("segments") or {}))
    hosts = _hosts(_mapping("hosts", data.get("hosts") or {}), {s.name for s in segments})
    instances = _instances(_mapping("instances", data.get("instances") or {}),
                           {h.name for h in hosts})
    commands = _commands(data.get("commands") or [], hosts, instances, segments)
    if not hosts:
        raise ValidationError("hosts", "at least one host is needed")
    last = max((c.at for c in commands), default=0.0)
    return Scenario(seed, dict(config), sim, segments, hosts, instances, commands, name, last)


def _each(section: str, data: Mapping[str, Any], build: Any) -> tuple[Any, ...]:
    """Build every entry of a section; domain errors get the entry's path."""
    out = []
    for name, spec in data.items():
        where = f"{section}.{name}"
        try:
            out.append(build(where, str(name), _mapping(where, spec or {})))
        except ValidationError as exc:
            if exc.field.startswith(where):
                raise
            raise ValidationError(f"{where}.{exc.field}" if exc.field else where,
                                  exc.reason) from None
    return tuple(out)


def _segments(data: Mapping[str, Any]) -> tuple[Segment, ...]:
    out = _each("segments", data, _segment)
    if not out:
        raise ValidationError("segments", "at least one segment is needed")
    return out


def _segment(where: str, name: str, spec: Mapping[str, Any]) -> Segment:
    _only(where, spec, ("recovery_method", "mass_failure_threshold", "enabled",
                        "hold_recovered_hosts", "description"))
    method = spec.get("recovery_method", "auto")
    try:
        recovery = RecoveryMethod(method)
    except ValueError:
        allowed = ", ".join(m.value for m in RecoveryMethod)
        raise ValidationError(f"{where}.recovery_method",
                              f"{method!r} is not one of {allowed}") from None
    return Segment(
        name=name, recovery_method=recovery,
        mass_failure_threshold=_number(f"{where}.mass_failure_threshold",
                                       spec.get("mass_failure_threshold", 0.5)),
        enabled=_bool(f"{where}.enabled", spec.get("enabled", True)),
        hold_recovered_hosts=_bool(f"{where}.hold_recovered_hosts",
                                   spec.get("hold_recovered_hosts", False)),
        description=str(spec.get("description", "")))


def _hosts(data: Mapping[str, Any], segments: set[str]) -> tuple[Host, ...]:
    def build(where: str, name: str, spec: Mapping[str, Any]) -> Host:
        _only(where, spec, ("segment", "vcpus", "ram_mb", "disk_gb", "fence", "reserved",
                            "maintenance", "address"))
        segment = spec.get("segment")
        if segment not in segments:
            raise ValidationError(f"{where}.segment", f"{segment!r} is not a segment of this "
                                  f"scenario; known: {', '.join(sorted(segments))}")
        return Host(
            name=name, segment=str(segment), capacity=_capacity(where, spec),
            fence_levels=_fence(f"{where}.fence", spec.get("fence")),
            reserved=_bool(f"{where}.reserved", spec.get("reserved", False)),
            maintenance=_bool(f"{where}.maintenance", spec.get("maintenance", False)),
            address=str(spec.get("address", "")))

    return _each("hosts", data, build)


def _fence(where: str, value: Any) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return DEFAULT_FENCE
    if not isinstance(value, list) or not value:
        raise ValidationError(where, "must be a non-empty list of fence methods")
    levels = []
    for i, level in enumerate(value):
        methods = level if isinstance(level, list) else [level]
        for m in methods:
            if m not in FENCE_METHODS:
                raise ValidationError(f"{where}[{i}]", f"{m!r} is not a fence method; "
                                      f"allowed: {', '.join(FENCE_METHODS)}")
        levels.append(tuple(str(m) for m in methods))
    return tuple(levels)


def _instances(data: Mapping[str, Any], hosts: set[str]) -> tuple[Instance, ...]:
    def build(where: str, name: str, spec: Mapping[str, Any]) -> Instance:
        _only(where, spec, ("host", "vcpus", "ram_mb", "disk_gb", "priority", "policy",
                            "anti_affinity_group", "project"))
        host = spec.get("host")
        if host not in hosts:
            raise ValidationError(f"{where}.host", f"{host!r} is not a host of this scenario; "
                                  f"known: {', '.join(sorted(hosts))}")
        policy_data = dict(_mapping(f"{where}.policy", spec.get("policy") or {}))
        if "priority" in spec:
            policy_data.setdefault("priority", spec["priority"])
        try:
            policy = HAPolicy.from_dict(policy_data)
        except ValidationError as exc:
            raise ValidationError(f"{where}.policy.{exc.field}", exc.reason) from None
        group = spec.get("anti_affinity_group")
        return Instance(id=name, name=name, host=str(host), resources=_capacity(where, spec),
                        policy=policy, anti_affinity_group=None if group is None else str(group),
                        project=str(spec.get("project", "")))

    return _each("instances", data, build)

def _commands(data: Any, hosts: tuple[Host, ...], instances: tuple[Instance, ...],
              segments: tuple[Segment, ...]) -> tuple[Command, ...]:
    if not isinstance(data, list):
        raise ValidationError("commands", "must be a list of {at: SECONDS, do: COMMAND}")
    names = _Names({h.name for h in hosts}, {i.id for i in instances}, {s.name for s in segments})
    out = []
    for i, item in enumerate(data):
        where = f"commands[{i}]"
        item = _mapping(where, item)
        _only(where, item, ("at", "do"))
        if "at" not in item or "do" not in item:
            raise ValidationError(where, "needs both `at` (seconds) and `do` (a command)")
        at = _number(f"{where}.at", item["at"], minimum=0.0)
        text = item["do"]
        if not isinstance(text, str):
            raise ValidationError(f"{where}.do", f"{text!r} is not a command; allowed: "
                                  f"{ALLOWED_COMMANDS}")
        out.append(_command(f"{where}.do", i, at, text, names))
    # Stable sort: commands at the same time keep their file order.
    return tuple(sorted(out, key=lambda c: c.at))


@dataclass(frozen=True)
class _Names:
    hosts: set[str]
    instances: set[str]
    segments: set[str]


def _command(where: str, index: int, at: float, text: str, names: _Names) -> Command:
    words = text.split()
    verb = words[0] if words else ""
    if verb not in COMMAND_USAGE:
        raise ValidationError(where, f"unknown command {text!r}; allowed: {ALLOWED_COMMANDS}")
    usage = COMMAND_USAGE[verb]

    def bad(why: str) -> ValidationError:
        return ValidationError(where, f"{text!r}: {why}; usage: {usage}")

    if verb == "controller":
        if words[1:] != ["restart"]:
            raise bad("unknown controller action")
        return Command(index, at, text, verb, "", "restart")
    if verb == "operator":
        return _operator(words, index, at, text, names, bad)
    if verb in ("decide", "action"):
        return _user(verb, words, index, at, text, names, bad)
    if len(words) < 2:
        raise bad("missing the target")
    target = words[1]
    if verb in _HOST_VERBS and target not in names.hosts:
        raise bad(f"{target!r} is not a host of this scenario")
    if verb in _VM_VERBS and target not in names.instances:
        raise bad(f"{target!r} is not an instance of this scenario")
    rest = words[2:]
    if verb in ("power-off", "power-on"):
        if rest:
            raise bad("takes no argument")
        return Command(index, at, text, verb, target)
    if not rest or rest[0] not in _ACTIONS[verb]:
        raise bad(f"action must be one of {', '.join(_ACTIONS[verb])}")
    action, args = rest[0], rest[1:]
    numbers = _command_numbers(verb, action, args, bad)
    return Command(index, at, text, verb, target, action, numbers)


def _operator(words: list[str], index: int, at: float, text: str, names: _Names,
              bad: Any) -> Command:
    extra = {"fence-ack": ("force",), "fence": ("ipmi", "redfish", "fence_agent")}
    if (len(words) not in (3, 4) or words[1] not in ("fence-ack", "fence", "resume")
            or (len(words) == 4 and words[3] not in extra.get(words[1], ()))):
        raise bad("expected `operator fence-ack H [force]`, `operator fence H [METHOD]` "
                  "or `operator resume S`")
    action, target = words[1], words[2]
    if action in ("fence-ack", "fence") and target not in names.hosts:
        raise bad(f"{target!r} is not a host of this scenario")
    if action == "resume" and target not in names.segments:
        raise bad(f"{target!r} is not a segment of this scenario")
    return Command(index, at, text, "operator", target, action)


def _user(verb: str, words: list[str], index: int, at: float, text: str, names: _Names,
          bad: Any) -> Command:
    """`decide VM ACTION` (answer its pending decision), `action VM ACTION [H]`."""
    most = 4 if verb == "action" else 3
    if not 3 <= len(words) <= most or words[1] not in names.instances:
        raise bad("needs an instance of this scenario and an action")
    if words[2] not in ACTIONS:
        raise bad(f"action must be one of {', '.join(ACTIONS)}")
    if len(words) == 4 and words[3] not in names.hosts:
        raise bad(f"{words[3]!r} is not a host of this scenario")
    return Command(index, at, text, verb, words[1], " ".join(words[2:]))


def _command_numbers(verb: str, action: str, args: list[str], bad: Any) -> tuple[float, ...]:
    wanted = {("network", "loss"): (1, 1), ("network", "delay"): (1, 2)}.get((verb, action),
                                                                          (0, 0))
    if not wanted[0] <= len(args) <= wanted[1]:
        raise bad(f"wrong number of arguments for {action!r}")
    try:
        numbers = tuple(float(a.rstrip("%")) for a in args)
    except ValueError:
        raise bad("arguments must be numbers") from None
    if any(not math.isfinite(n) or n < 0 for n in numbers):
        raise bad("arguments must be zero or more")
    if action == "loss" and numbers[0] > 100:
        raise bad("loss is a percentage (0-100)")
    return numbers


def _capacity(where: str, spec: Mapping[str, Any]) -> Capacity:
    return Capacity(
        vcpus=_int(f"{where}.vcpus", spec.get("vcpus", 0)),
        ram_mb=_int(f"{where}.ram_mb", spec.get("ram_mb", 0)),
        disk_gb=_int(f"{where}.disk_gb", spec.get("disk_gb", 0)))


def _only(where: str, spec: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in spec:
        if key not in allowed:
            raise ValidationError(f"{where}.{key}", f"unknown key; allowed: {', '.join(allowed)}")


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(where, f"{value!r} is not a whole number")
    return value


def _number(where: str, value: Any, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(where, f"{value!r} is not a number")
    if minimum is not None and value < minimum:
        raise ValidationError(where, f"{value} is below {minimum}")
    return float(value)


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(where, f"{value!r} is not true or false")
    return value
