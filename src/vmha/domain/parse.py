"""Typed values out of plain data (API bodies, stored JSON, scenario files).

Each helper returns the value with its Python type or raises ValidationError
naming `key`, so a bad value is reported where it was written. Used by the
`from_dict` constructors of the domain's values (policy, probes). Standard
library only.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from vmha.domain.errors import ValidationError

E = TypeVar("E", bound=enum.Enum)


def enum_value(kind: type[E], key: str, value: Any) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise ValidationError(key, f"{value!r} is not one of {allowed}") from None


def whole(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(key, f"{value!r} is not a whole number")
    return value


def number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(key, f"{value!r} is not a number")
    return float(value)


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(key, f"{value!r} is not true or false")
    return value
