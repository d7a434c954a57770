"""What the controller knows about a host's agent after it registered.

`secret` signs the host's heartbeats (HMAC); `api_url` and `api_token` let
the controller ask the agent to probe its peers. `Registration` is one
agent's introduction as the store takes it in bulk (`register_agents`).
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmha.domain.errors import ValidationError
from vmha.domain.model import Host


@dataclass(frozen=True)
class AgentRecord:
    host: str
    secret: str
    api_url: str = ""
    api_token: str = ""
    version: str = ""
    boot_id: str = ""
    registered_at: float = 0.0

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValidationError("secret", "must be at least 16 characters long")
        if self.api_url and not self.api_url.startswith(("http://", "https://")):
            raise ValidationError("api.url", f"{self.api_url!r} is not an http(s) URL")


@dataclass(frozen=True)
class Registration:
    """One agent introducing itself: its host as the agent sees it (name,
    segment, address, capacity) and its record (the secret is used only if
    the agent has none yet: a registered agent keeps its secret)."""

    host: Host
    agent: AgentRecord


@dataclass(frozen=True)
class Registered:
    agent: AgentRecord  # as stored, with the secret to use
    created_host: bool
