"""HA policies of OpenStack servers, from the keys Nova keeps for them.

Four layers, highest first, merged key by key: the server's metadata, its
image's properties, its flavor's extra specs, then the segment's default
policy (what an instance without keys gets anyway). vmha reads its own
`vmha:*` keys at every layer:

    vmha:host, vmha:guest, vmha:app     auto | notify | auto+notify | custom | off
    vmha:priority                       0..1000
    vmha:max_restarts, vmha:window_s    the restart budget
    vmha:evacuate_to_stopped            true | false
    vmha:custom_deadline_s, vmha:custom_fallback
    vmha:app_actions                    the application escalation: a JSON list
                                        (["reset", "rebuild"]) or reset, rebuild

and two foreign conventions: Masakari's `HA_Enabled` (server metadata;
`True` protects the server from host failures, `False` does not) when no
`vmha:host` is set, and RHOSO's `evacuable` tag (flavor extra spec or
image property `evacuable=true`), honoured only when the operator turns
it on: then a server without that tag (and without `vmha:host`) is not
evacuated. `hw:watchdog_action` (Nova's own key, flavor or image) is
read into the policy's watchdog action for display.

`vmha:app_actions` takes the steps the API takes (`AppStep.parse`),
except `exec:`: whoever may set a server's metadata (its project) would
pick the command run inside the guest, which only an admin may offer
(STYLE habit 12), and Nova gives vmha no channel into the guest anyway.

A bad value never stops anything: `derive` returns the problems (key,
value, why) and no policy, so the server keeps the segment default and
the caller publishes `instance.policy_invalid`. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from vmha.domain.errors import ValidationError
from vmha.domain.policy import HAPolicy
from vmha.domain.probes import parse_steps

PREFIX = "vmha:"
KEYS = ("host", "guest", "app", "priority", "max_restarts", "window_s",
        "evacuate_to_stopped", "custom_deadline_s", "custom_fallback", "app_actions")
INTS = frozenset({"priority", "max_restarts"})
FLOATS = frozenset({"window_s", "custom_deadline_s"})
WATCHDOG = {"reset": "reset", "poweroff": "poweroff", "pause": "pause", "none": "none",
            "disabled": "none"}
TRUE, FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Layers:
    """The raw keys of one server, by layer."""

    metadata: Mapping[str, str]
    image: Mapping[str, str]
    flavor: Mapping[str, str]


@dataclass(frozen=True)
class Problem:
    key: str
    value: str
    reason: str
    layer: str


@dataclass(frozen=True)
class Derived:
    """The policy of a server: None = the segment default applies."""

    policy: HAPolicy | None
    problems: tuple[Problem, ...] = ()
    sources: Mapping[str, str] | None = None  # policy key -> layer it came from
    watchdog_action: str = ""


def _pick(layers: Layers, key: str) -> tuple[str, str] | None:
    for name, keys in (("metadata", layers.metadata), ("image", layers.image),
                       ("flavor", layers.flavor)):
        if key in keys:
            return str(keys[key]), name
    return None


def _typed(key: str, raw: str) -> object:
    text = raw.strip()
    if key in INTS:
        try:
            return int(text)
        except ValueError:
            raise ValidationError(key, f"{raw!r} is not a whole number") from None
    if key in FLOATS:
        try:
            return float(text)
        except ValueError:
            raise ValidationError(key, f"{raw!r} is not a number") from None
    if key == "evacuate_to_stopped":
        if text.lower() in TRUE | FALSE:
            return text.lower() in TRUE
        raise ValidationError(key, f"{raw!r} is not true or false")
    if key == "app_actions":
        return _steps(text)
    return text


def _steps(text: str) -> list[str]:
    """`vmha:app_actions`: a JSON list of step names, or the names
    separated by commas; each checked as the API checks it, `exec:` refused."""
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError:
            raise ValidationError("app_actions", "starts with [ but is not a JSON list; give "
                                  '["reset", "rebuild"] or reset, rebuild') from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValidationError("app_actions", "must be a JSON list of step names")
    else:
        values = [v.strip() for v in text.split(",")]
    try:
        steps = parse_steps(values)
    except ValidationError as exc:
        raise ValidationError("app_actions", f"{exc.field}: {exc.reason}") from None
    for index, step in enumerate(steps):
        if step.kind == "exec":
            raise ValidationError("app_actions", f"app_actions[{index}]: exec steps are not "
                                  "taken from Nova's keys (the server's project would choose "
                                  "a command run inside the guest, and Nova offers vmha no "
                                  "channel into it); use reset, restart or rebuild, or an "
                                  "admin's named policy")
    return [str(step) for step in steps]


def _foreign(layers: Layers, evacuable_tags: bool) -> tuple[str, str] | None:
    """What Masakari's or RHOSO's keys say about the host layer, if anything."""
    ha = layers.metadata.get("HA_Enabled")
    if ha is not None:
        return ("auto" if str(ha).strip().lower() in TRUE else "off"), "metadata"
    if evacuable_tags:
        tag = _pick(Layers({}, layers.image, layers.flavor), "evacuable")
        if tag is not None and tag[0].strip().lower() in TRUE:
            return "auto", tag[1]
        return "off", "evacuable"
    return None


def derive(layers: Layers, default: HAPolicy | None = None,
           evacuable_tags: bool = False) -> Derived:
    """The server's policy: its keys over the segment's default."""
    chosen: dict[str, object] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for key in KEYS:
        found = _pick(layers, PREFIX + key)
        if found is None:
            continue
        try:
            chosen[key] = _typed(key, found[0])
            sources[key] = found[1]
        except ValidationError as exc:
            problems.append(Problem(PREFIX + key, found[0], exc.reason, found[1]))
    if "host" not in chosen and "host" not in {p.key[len(PREFIX):] for p in problems}:
        foreign = _foreign(layers, evacuable_tags)
        if foreign is not None:
            chosen["host"], sources["host"] = foreign
    watchdog = _pick(Layers({}, layers.image, layers.flavor), "hw:watchdog_action")
    if watchdog is not None and watchdog[0] in WATCHDOG:
        chosen["watchdog_action"] = WATCHDOG[watchdog[0]]
        sources["watchdog_action"] = watchdog[1]
    shown = watchdog[0] if watchdog is not None else ""
    if problems:
        return Derived(None, tuple(problems), sources, shown)
    if not set(chosen) - {"watchdog_action"}:  # nothing of vmha's: the segment default
        return Derived(None, (), sources, shown)
    base = (default or HAPolicy()).to_dict()
    try:
        return Derived(HAPolicy.from_dict({**base, **chosen}), (), sources, shown)
    except ValidationError as exc:
        key = PREFIX + exc.field
        found = _pick(layers, key)
        value, layer = found if found is not None else (str(chosen.get(exc.field)), "?")
        return Derived(None, (Problem(key, value, exc.reason, layer),), sources, shown)
