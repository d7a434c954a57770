"""Public face of vmha's error tree (defined in `vmha.domain.errors`)."""

from vmha.domain.errors import (
    ConfigError,
    Conflict,
    InvalidTransition,
    NotFound,
    NotLeader,
    PermissionDenied,
    StaleWrite,
    StoreUnavailable,
    TemporaryError,
    TooLarge,
    Unauthenticated,
    ValidationError,
    VmhaError,
)

__all__ = [
    "ConfigError",
    "Conflict",
    "InvalidTransition",
    "NotFound",
    "NotLeader",
    "PermissionDenied",
    "StaleWrite",
    "StoreUnavailable",
    "TemporaryError",
    "TooLarge",
    "Unauthenticated",
    "ValidationError",
    "VmhaError",
]
