"""Application probes and the application escalation steps of a policy.

A `Probe` says how a host agent checks an instance's application: `http`
(a URL answering 2xx/3xx, optionally with a body substring), `tcp` (a port
accepting connections) or `exec` (a command run inside the guest through
the QEMU guest agent, exit code 0 = healthy), and how often, with which
timeout and thresholds. An `AppStep` is one step of the escalation the
controller runs when the application fails (`exec:<command>`, `reboot`,
`reset`, `restart`, `rebuild`).

Both are frozen values validated on construction (ValidationError naming
the field); `vmha.domain.policy` holds them in an `HAPolicy`. The agent's
probe document (`probe_document`) is derived from them here so the
controller and the agent share one definition. `rebuild` (Nova rebuilds
the server from its current image) needs a cloud that can: the API refuses
it otherwise (`vmha.domain.policy.check_cloud`).

Standard library only: no I/O, no clock.
"""

from __future__ import annotations

import enum
import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from vmha.domain.errors import ValidationError
from vmha.domain.parse import enum_value, number, whole

TARGET_MAX = 1024
EXPECT_MAX = 256
STEPS_MAX = 8
#: The escalation steps a policy may name, in the order of growing force.
APP_STEP_KINDS = ("exec", "reboot", "reset", "restart", "rebuild")


class ProbeKind(str, enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"


def _printable(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(field, "must not contain control characters")


def check_url(value: str, field: str = "target") -> None:
    """An http(s) URL with a host and a valid port (ValidationError otherwise)."""
    _printable(field, value, TARGET_MAX)
    if any(c.isspace() for c in value):
        raise ValidationError(field, f"{value!r} contains spaces: not a URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, f"{value!r} is not an http(s) URL with a host "
                              "(for example http://198.18.1.11:8080/health)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field, f"{value!r} has an invalid port (1-65535)") from exc
    if port == 0:
        raise ValidationError(field, f"{value!r}: port 0 is not a port to probe (1-65535)")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(field, f"{parts.scheme}://…@{parts.hostname}: credentials in "
                              "a probe URL are not supported")


def split_tcp(value: str, field: str = "target") -> tuple[str, int]:
    """`PORT` or `HOST:PORT` (`[v6]:PORT`) -> (host or "", port)."""
    _printable(field, value, TARGET_MAX)
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(field, f"{value!r} is not a TCP port (1-65535) or HOST:PORT")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(c.isalnum() or c in "-." for c in host):
                raise ValidationError(field, f"{host!r} is not an address or a host "
                                      "name") from None
    return host, int(port)


def split_command(value: str, field: str = "target") -> tuple[str, ...]:
    """The argv of a command line (shell-like quoting, no shell)."""
    _printable(field, value, TARGET_MAX)
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:
        raise ValidationError(field, f"cannot split {value!r} into arguments: {exc}") from exc
    if not argv:
        raise ValidationError(field, "must name a command to run in the guest")
    return argv


@dataclass(frozen=True)
class Probe:
    """An application probe. `target`: URL (http), `PORT` or `HOST:PORT`
    (tcp; the instance's address when no host), command line (exec)."""

    kind: ProbeKind
    target: str
    interval_s: float = 10.0
    timeout_s: float = 2.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay_s: float = 0.0
    expect: str = ""  # http: the body must contain this text

    def __post_init__(self) -> None:
        if not self.target:
            raise ValidationError("target", "must not be empty")
        if self.kind is ProbeKind.HTTP:
            check_url(self.target)
        elif self.kind is ProbeKind.TCP:
            split_tcp(self.target)
        else:
            split_command(self.target)
        if self.expect and self.kind is not ProbeKind.HTTP:
            raise ValidationError("expect", "only http probes check a body")
        _printable("expect", self.expect, EXPECT_MAX)
        if not 0 < self.interval_s <= 3600:
            raise ValidationError("interval_s", "must be in (0, 3600]")
        if not 0 < self.timeout_s <= self.interval_s:
            raise ValidationError("timeout_s", "must be positive and at most interval_s")
        if not 1 <= self.failure_threshold <= 100:
            raise ValidationError("failure_threshold", "must be 1 to 100")
        if not 1 <= self.success_threshold <= 100:
            raise ValidationError("success_threshold", "must be 1 to 100")
        if not 0 <= self.initial_delay_s <= 3600:
            raise ValidationError("initial_delay_s", "must be in [0, 3600] seconds")

    @property
    def name(self) -> str:
        """How events and logs name the probe."""
        return f"{self.kind.value} {self.target}"


@dataclass(frozen=True)
class AppStep:
    """One escalation step: `exec` runs `command` in the guest (guest
    agent), `reboot` asks the guest (guest agent, else ACPI), `reset` is the
    reset button, `restart` is destroy + start, `rebuild` (OpenStack) has
    Nova rebuild the server from its current image."""

    kind: str
    command: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, field: str = "app_actions") -> AppStep:
        if not isinstance(text, str):
            raise ValidationError(field, f"{text!r} is not a step name")
        kind, sep, command = text.partition(":")
        kind = kind.strip()
        if kind not in APP_STEP_KINDS:
            raise ValidationError(field, f"{text!r} is not one of exec:<command>, "
                                  + ", ".join(APP_STEP_KINDS[1:]))
        if kind == "exec":
            if not sep:
                raise ValidationError(field, "exec needs a command: exec:/path/to/cmd args")
            return cls(kind, split_command(command.strip(), field))
        if sep:
            raise ValidationError(field, f"{kind} takes no argument (got {text!r})")
        return cls(kind)

    def __str__(self) -> str:
        return f"exec:{shlex.join(self.command)}" if self.kind == "exec" else self.kind


def parse_steps(values: object, field: str = "app_actions") -> tuple[AppStep, ...]:
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValidationError(field, "must be a list of steps like "
                              '["exec:/etc/init.d/app restart", "reset"]')
    if not 1 <= len(values) <= STEPS_MAX:
        raise ValidationError(field, f"must list 1 to {STEPS_MAX} steps")
    return tuple(AppStep.parse(v, f"{field}[{i}]") for i, v in enumerate(values))


def guest_agent_fields(probes: tuple[Probe, ...], steps: tuple[AppStep, ...]) -> list[str]:
    """The policy fields that need the QEMU guest agent channel."""
    found = [f"probes[{i}].kind" for i, p in enumerate(probes) if p.kind is ProbeKind.EXEC]
    found += [f"app_actions[{i}]" for i, s in enumerate(steps) if s.kind == "exec"]
    return found


_PROBE_NUMBERS = {f.name: f.default for f in fields(Probe)
                  if f.name not in ("kind", "target", "expect")}


def probe_from_dict(data: Any, where: str = "probe") -> Probe:
    """A probe from plain data; errors name `where.<key>`."""
    if not isinstance(data, Mapping):
        raise ValidationError(where, "must be a mapping")
    unknown = sorted(set(data) - {f.name for f in fields(Probe)})
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", "unknown probe key")
    target, expect = data.get("target", ""), data.get("expect", "")
    if isinstance(target, int) and not isinstance(target, bool):
        target = str(target)  # `target: 22` in a YAML file
    for key, text in (("target", target), ("expect", expect)):
        if not isinstance(text, str):
            raise ValidationError(f"{where}.{key}", f"{text!r} is not text")
    values: dict[str, Any] = {}
    for key, default in _PROBE_NUMBERS.items():
        convert = whole if isinstance(default, int) else number
        values[key] = convert(f"{where}.{key}", data.get(key, default))
    try:
        return Probe(kind=enum_value(ProbeKind, f"{where}.kind", data.get("kind")),
                     target=target, expect=expect, **values)
    except ValidationError as exc:
        if exc.field.startswith(where):
            raise
        raise ValidationError(f"{where}.{exc.field}", exc.reason) from None


def probe_to_dict(probe: Probe) -> dict[str, Any]:
    return {**{f.name: getattr(probe, f.name) for f in fields(probe)}, "kind": probe.kind.value}
