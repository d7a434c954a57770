"""Public face of vmha's error tree (defined in `vmha.domain.errors`)."""

from vmha.domain.errors import (
    ConfigError,
    Conflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    StoreUnavailable,
    TemporaryError,
    Unauthenticated,
    ValidationError,
    VmhaError,
)

__all__ = [
    "ConfigError",
    "Conflict",
    "InvalidTransition",
    "NotFound",
    "PermissionDenied",
    "StoreUnavailable",
    "TemporaryError",
    "Unauthenticated",
    "ValidationError",
    "VmhaError",
]
