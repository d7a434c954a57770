"""Dashboard sessions: which token a browser logged in with.

Why a session at all when the API takes bearer tokens: a browser cannot
add an `Authorization` header to a plain link, so the read-only pages
(which must work without JavaScript) need a cookie. The cookie holds a
random session id, never the token; the table keeps a SHA-256 digest of
that id and the principal, in this process's memory (a controller restart
logs everyone out). It authorizes only GET pages of the dashboard: every
change goes through the `/v1` API with the bearer token kept in the tab's
sessionStorage, and the API never reads the cookie, so a forged
cross-site request cannot change anything (no CSRF surface); the cookie is
also `HttpOnly` and `SameSite=Strict`.

Used by vmha.web.pages; clock injected (no time reads here).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from vmha.api.auth import Principal
from vmha.ports import Clock

COOKIE = "vmha_session"
IDLE_S = 8 * 3600.0  # a session unused this long is gone
MAX_SESSIONS = 10_000  # the oldest go first beyond this


@dataclass
class Session:
    principal: Principal
    last_used: float


class SessionTable:
    def __init__(self, clock: Clock, idle_s: float = IDLE_S) -> None:
        self._clock = clock
        self._idle_s = idle_s
        self._sessions: dict[bytes, Session] = {}

    def open(self, principal: Principal) -> str:
        """A new session for `principal`; returns the id for the cookie."""
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
            del self._sessions[oldest]
        sid = secrets.token_urlsafe(32)
        self._sessions[_digest(sid)] = Session(principal, self._clock.now())
        return sid

    def lookup(self, sid: str | None) -> Principal | None:
        if not sid:
            return None
        key = _digest(sid)
        session = self._sessions.get(key)
        now = self._clock.now()
        if session is None or now - session.last_used > self._idle_s:
            self._sessions.pop(key, None)
            return None
        session.last_used = now
        return session.principal

    def close(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(_digest(sid), None)

    def _expire(self) -> None:
        now = self._clock.now()
        for key in [k for k, s in self._sessions.items() if now - s.last_used > self._idle_s]:
            del self._sessions[key]


def _digest(sid: str) -> bytes:
    return hashlib.sha256(sid.encode("ascii", "replace")).digest()
