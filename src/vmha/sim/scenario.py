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

Shapes and types are pydantic models (`_ScenarioSpec` and its parts, as
`vmha.config` does for settings); references between sections (a host's
segment, a command's target) and the command language are checked after.
Called by the runner and the CLI; no I/O besides reading the file, no
knowledge of the engine (controller settings are validated by the runner).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

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

# Shapes and types are checked by pydantic (as config.py does for settings);
# what needs the rest of the file (a host's segment exists, a command's
# target is a host) is checked after, by the functions below. Numbers are
# strict: `true` is not 1, 2.5 is not a whole number, `.inf` is not a time.
Number = Annotated[float, Strict(), Field(ge=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Count = Annotated[int, Strict(), Field(ge=0)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        """`key:` with nothing after it in YAML is None: an empty mapping."""
        return {} if data is None else data


class SimSettings(_Spec):
    """Simulator-only knobs (the `sim:` section). Times in seconds."""

    # the agent's [isolation] timeout_s: no contact for this long after the
    # last contact expired, and it takes its isolation action
    agent_isolation_timeout_s: Number = 10.0
    agent_contact_window_s: Number = 0.0  # a contact lasts this; 0: 3 heartbeat intervals
    agent_watchdog_timeout_s: Number = 5.0  # host resets this long after the last feed
    agent_send_jitter_s: Number = 0.02  # +- on each heartbeat period
    network_base_delay_ms: Number = 0.5  # one-way latency of a healthy link
    bmc_status_s: Number = 0.05  # a power status read
    bmc_accept_s: Number = 0.2  # a power-off/on request is accepted after this
    bmc_power_off_min_s: Number = 1.0  # then the host goes dark after min..max more
    bmc_power_off_max_s: Annotated[Number, Field(validate_default=True)] = 1.8
    bmc_timeout_s: Number = 5.0  # an unreachable BMC fails after this
    host_boot_s: Number = 20.0  # power-on until the agent runs again
    vm_start_s: Number = 1.0  # start/reset of a domain returns after this
    cloud_timeout_s: Number = 10.0  # a call to a dead/unreachable host fails after this
    guest_watchdog_s: Number = 3.0  # a hung guest's watchdog fires after this
    app_detect_s: Number = 30.0  # app failure noticed after this (when no probe given)
    guest_exec_s: Number = 0.5  # an in-guest command (the app's restart) takes this long
    event_retry_s: Number = 1.0  # agent resends undelivered guest events after this
    # what a cut-off agent does: `reboot` (stop feeding its watchdog) or
    # `none` (always feed: the host is never self-fenced; its fence levels
    # must then not count on agent_watchdog)
    agent_isolation_action: Literal["reboot", "none"] = "reboot"

    @field_validator("bmc_power_off_max_s")
    @classmethod
    def _max_above_min(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("bmc_power_off_min_s", 0.0):
            raise ValueError("must be >= bmc_power_off_min_s")
        return value


def _fence_level(value: Any) -> Any:
    """A level is one method name or a list of names."""
    return value if isinstance(value, list) else [value]


def _fence_methods(level: tuple[str, ...]) -> tuple[str, ...]:
    for m in level:
        if m not in FENCE_METHODS:
            raise ValueError(f"{m!r} is not a fence method; allowed: {', '.join(FENCE_METHODS)}")
    return level


FenceLevel = Annotated[tuple[str, ...], BeforeValidator(_fence_level),
                       AfterValidator(_fence_methods)]


class _Sized(_Spec):
    vcpus: Count = 0
    ram_mb: Count = 0
    disk_gb: Count = 0

    def capacity(self) -> Capacity:
        return Capacity(vcpus=self.vcpus, ram_mb=self.ram_mb, disk_gb=self.disk_gb)


class _SegmentSpec(_Spec):
    recovery_method: RecoveryMethod = RecoveryMethod.AUTO
    mass_failure_threshold: Fraction = 0.5
    enabled: StrictBool = True
    hold_recovered_hosts: StrictBool = False
    description: str = ""


class _HostSpec(_Sized):
    segment: str | None = None
    fence: Annotated[list[FenceLevel], Field(min_length=1)] | None = None
    reserved: StrictBool = False
    maintenance: StrictBool = False
    address: str = ""


class _InstanceSpec(_Sized):
    host: str | None = None
    priority: Any = None  # checked by HAPolicy, as policy.priority
    policy: dict[str, Any] | None = None
    anti_affinity_group: str | None = None
    project: str = ""


class _CommandSpec(_Spec):
    at: Number
    do: str

    @model_validator(mode="before")
    @classmethod
    def _both(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and ("at" not in data or "do" not in data):
            raise ValueError("needs both `at` (seconds) and `do` (a command)")
        return data

    @field_validator("do", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a command; allowed: {ALLOWED_COMMANDS}")
        return value


class _ScenarioSpec(_Spec):
    seed: StrictInt = 0
    config: dict[str, Any] = {}
    sim: SimSettings = SimSettings()
    segments: dict[str, _SegmentSpec] = {}
    hosts: dict[str, _HostSpec] = {}
    instances: dict[str, _InstanceSpec] = {}
    commands: list[_CommandSpec] = []

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """An empty section (`hosts:`) is left out: its default applies."""
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


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
    try:
        spec = _ScenarioSpec.model_validate(data)
    except PydanticValidationError as exc:
        raise _translate(exc) from None
    segments = _each("segments", spec.segments, _segment)
    if not segments:
        raise ValidationError("segments", "at least one segment is needed")
    hosts = _each("hosts", spec.hosts, _host, {s.name for s in segments})
    if not hosts:
        raise ValidationError("hosts", "at least one host is needed")
    instances = _each("instances", spec.instances, _instance, {h.name for h in hosts})
    commands = _commands(spec.commands, hosts, instances, segments)
    last = max((c.at for c in commands), default=0.0)
    return Scenario(spec.seed, dict(spec.config), spec.sim, segments, hosts, instances,
                    commands, name, last)


def _translate(exc: PydanticValidationError) -> ValidationError:
    """pydantic's first error as vmha's: the key's path (`hosts.h1.vcpus`,
    `commands[3].at`) and what is wrong, in the words the parser always used."""
    err = exc.errors()[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    value, kind = err.get("input"), err["type"]
    reasons = {
        "extra_forbidden": lambda: "unknown key; allowed: " + ", ".join(
            _allowed(err["loc"][:-1])),
        "missing": lambda: "required key",
        "int_type": lambda: f"{value!r} is not a whole number",
        "float_type": lambda: f"{value!r} is not a number",
        "finite_number": lambda: f"{value!r} is not a number",
        "bool_type": lambda: f"{value!r} is not true or false",
        "dict_type": lambda: f"must be a mapping, got {type(value).__name__}",
        "model_type": lambda: f"must be a mapping, got {type(value).__name__}",
        "list_type": lambda: f"must be a list, got {type(value).__name__}",
        "string_type": lambda: f"{value!r} is not a string",
        "too_short": lambda: "must not be empty",
        "greater_than_equal": lambda: f"{value} is below {err['ctx']['ge']}",
        "enum": lambda: f"{value!r} is not one of {err['ctx']['expected']}",
        "literal_error": lambda: f"{value!r} is not one of {err['ctx']['expected']}",
    }
    reason = reasons[kind]() if kind in reasons else err["msg"].removeprefix("Value error, ")
    return ValidationError(where.lstrip("."), reason)


def _allowed(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at `loc` takes (for "unknown key; allowed: ...")."""
    model: Any = _ScenarioSpec
    for part in loc:
        model = _unwrapped(model)
        if isinstance(model, type) and issubclass(model, BaseModel):
            model = model.model_fields[str(part)].annotation
        else:  # a section's entry or a list's item
            model = get_args(model)[-1]
    model = _unwrapped(model)
    return list(model.model_fields) if isinstance(model, type) else []


def _unwrapped(kind: Any) -> Any:
    """`X` of `Annotated[X, ...]` and of `X | None`."""
    while get_origin(kind) in (Annotated, UnionType, Union):
        kind = next(a for a in get_args(kind) if a is not type(None))
    return kind


def _each(section: str, specs: Mapping[str, _Spec], build: Any, *known: set[str],
          ) -> tuple[Any, ...]:
    """Build every entry of a section; domain errors get the entry's path."""
    out = []
    for name, spec in specs.items():
        where = f"{section}.{name}"
        try:
            out.append(build(where, name, spec, *known))
        except ValidationError as exc:
            if exc.field.startswith(where):
                raise
            raise ValidationError(f"{where}.{exc.field}" if exc.field else where,
                                  exc.reason) from None
    return tuple(out)


def _segment(where: str, name: str, spec: _SegmentSpec) -> Segment:
    return Segment(name=name, recovery_method=spec.recovery_method,
                   mass_failure_threshold=spec.mass_failure_threshold, enabled=spec.enabled,
                   hold_recovered_hosts=spec.hold_recovered_hosts,
                   description=spec.description)


def _host(where: str, name: str, spec: _HostSpec, segments: set[str]) -> Host:
    if spec.segment not in segments:
        raise ValidationError(f"{where}.segment", f"{spec.segment!r} is not a segment of this "
                              f"scenario; known: {', '.join(sorted(segments))}")
    return Host(name=name, segment=spec.segment, capacity=spec.capacity(),
                fence_levels=DEFAULT_FENCE if spec.fence is None else tuple(spec.fence),
                reserved=spec.reserved, maintenance=spec.maintenance, address=spec.address)


def _instance(where: str, name: str, spec: _InstanceSpec, hosts: set[str]) -> Instance:
    if spec.host not in hosts:
        raise ValidationError(f"{where}.host", f"{spec.host!r} is not a host of this "
                              f"scenario; known: {', '.join(sorted(hosts))}")
    policy_data = dict(spec.policy or {})
    if "priority" in spec.model_fields_set:
        policy_data.setdefault("priority", spec.priority)
    try:
        policy = HAPolicy.from_dict(policy_data)
    except ValidationError as exc:
        raise ValidationError(f"{where}.policy.{exc.field}", exc.reason) from None
    return Instance(id=name, name=name, host=spec.host, resources=spec.capacity(),
                    policy=policy, anti_affinity_group=spec.anti_affinity_group,
                    project=spec.project)


def _commands(specs: list[_CommandSpec], hosts: tuple[Host, ...],
              instances: tuple[Instance, ...], segments: tuple[Segment, ...],
              ) -> tuple[Command, ...]:
    names = _Names({h.name for h in hosts}, {i.id for i in instances}, {s.name for s in segments})
    out = [_command(f"commands[{i}].do", i, spec.at, spec.do, names)
           for i, spec in enumerate(specs)]
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
