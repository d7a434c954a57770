"""The one error tree of vmha.

Every error vmha raises on purpose derives from `VmhaError`. Adapters
translate library errors into these with ``raise X from exc``; the API maps
them to problem+json responses (status codes below); the CLI prints them as
one line.

    VmhaError
    ├── ValidationError        bad input or config (400/422); names the field
    ├── NotFound               no such segment/host/instance/... (404)
    ├── Conflict               exists already, stale generation, in use (409)
    │   ├── StaleWrite         the record changed since it was read (409)
    │   └── NotLeader          a write of a controller whose leadership ended
    ├── InvalidTransition      a state machine refused a change (409)
    ├── PermissionDenied       authenticated but not allowed (403)
    ├── Unauthenticated        no or bad credentials (401)
    ├── TooLarge               a request body over the limit (413)
    ├── ConfigError            the configuration cannot be used (exit 2)
    └── TemporaryError         retry later; carries `delay_s`
        └── StoreUnavailable   the database cannot be reached (503)

This module imports only the standard library: the domain uses it too.
"""

from __future__ import annotations


class VmhaError(Exception):
    """Base of every error vmha raises on purpose."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationError(VmhaError):
    """Input that does not fit: `field` names where, `detail` says why."""

    status = 422
    title = "Invalid input"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.field = field
        self.reason = detail


class NotFound(VmhaError):
    status = 404
    title = "Not found"

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} does not exist")
        self.kind = kind
        self.key = key


class Conflict(VmhaError):
    status = 409
    title = "Conflict"


class StaleWrite(Conflict):
    """A versioned record (host, instance, job) changed since the writer read
    it: the write was refused, nothing was overwritten. Read it again and
    re-apply the change (the engine and the API do), or report a 409."""

    title = "Changed meanwhile"

    def __init__(self, kind: str, key: str, stored: int, read: int) -> None:
        super().__init__(f"{kind} {key!r} was changed meanwhile (now at version {stored}, "
                         f"this change was made on version {read}); reload it and try again")
        self.kind = kind
        self.key = key


class InvalidTransition(Conflict):
    title = "Invalid state transition"

    def __init__(self, kind: str, key: str, current: str, wanted: str) -> None:
        VmhaError.__init__(
            self, f"{kind} {key!r} cannot go from {current!r} to {wanted!r}"
        )
        self.current = current
        self.wanted = wanted


class PermissionDenied(VmhaError):
    status = 403
    title = "Forbidden"


class Unauthenticated(VmhaError):
    status = 401
    title = "Unauthorized"


class TooLarge(VmhaError):
    status = 413
    title = "Content too large"


class ConfigError(VmhaError):
    """The configuration cannot be used; the message names key and value."""

    status = 500
    title = "Configuration error"


class TemporaryError(VmhaError):
    """Something that may work later; `delay_s` says when to try again."""

    status = 503
    title = "Temporarily unavailable"

    def __init__(self, detail: str, delay_s: float = 1.0) -> None:
        super().__init__(detail)
        self.delay_s = delay_s


class StoreUnavailable(TemporaryError):
    title = "Store unavailable"


class NotLeader(Conflict):
    """A controller wrote as leader after another one took over (its leader
    epoch is older than the store's): the write is refused, nothing changed."""

    title = "Not the leader"
