"""The host agent's configuration (`vmha agent --config agent.toml`).

`load_agent_config(path)` reads the TOML file and returns a validated,
frozen `AgentConfig`, or raises ConfigError naming the bad key and value
(the CLI exits 2). Secrets may be inline or in files; files are read here,
once, so a missing file is a configuration error found at start.

Nothing here opens sockets or starts anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from vmha.adapters.heartbeat.wire import DEFAULT_HEARTBEAT_PORT, HOST_MAX
from vmha.config import describe_validation, read_toml
from vmha.errors import ConfigError

DEFAULT_AGENT_PORT = 8792


def _split_hostport(value: str, default_port: int | None) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port) if default_port else ""
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 198.18.0.1:8791)")
    return host, int(port)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ValueError(f"{value!r} is not an http(s) URL (for example http://198.18.0.1:8790)")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Secret(_Section):
    """Exactly one of an inline value or a file holding it."""

    @staticmethod
    def _read(inline: SecretStr | None, path: Path | None, key: str) -> str | None:
        if inline is not None:
            return inline.get_secret_value()
        if path is None:
            return None
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {str(path)!r}: {exc.strerror}") from exc
        if not value:
            raise ConfigError(f"{key}_file: {str(path)!r} is empty")
        return value


class ControllerConfig(_Secret):
    """Where the controllers are. `heartbeat`: every controller's UDP
    address (each heartbeat goes to all). `url`: the REST API for
    registration and event reports, one URL or a list of every
    controller's (tried in turn: one that does not answer, or answers
    503, hands the call to the next). A list given as `url` is kept as its
    first entry in `url` and the rest in `url_alternates`."""

    heartbeat: tuple[str, ...] = Field(min_length=1)  # host:port, UDP
    url: str = ""
    url_alternates: tuple[str, ...] = ()
    token: SecretStr | None = None
    token_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _url_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("url"), list | tuple):
            urls = list(data["url"])
            data = {**data, "url": urls[0] if urls else "",
                    "url_alternates": tuple(urls[1:])}
        return data

    @field_validator("heartbeat")
    @classmethod
    def _addrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            _split_hostport(item, DEFAULT_HEARTBEAT_PORT)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value) if value else value

    @field_validator("url_alternates")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_http_url(u) for u in value)

    def api_urls(self) -> tuple[str, ...]:
        """Every controller API URL, in the order they are tried."""
        return tuple(u for u in (self.url, *self.url_alternates) if u)

    def addresses(self) -> list[tuple[str, int]]:
        return [_split_hostport(a, DEFAULT_HEARTBEAT_PORT) for a in self.heartbeat]

    def token_value(self) -> str | None:
        return self._read(self.token, self.token_file, "controller.token")


class ApiSection(_Secret):
    listen: str = f"0.0.0.0:{DEFAULT_AGENT_PORT}"
    token: SecretStr | None = None
    token_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_hostport(value, None)
        return value

    @model_validator(mode="after")
    def _one(self) -> ApiSection:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token or token_file")
        return self

    def hostport(self) -> tuple[str, int]:
        return _split_hostport(self.listen, None)

    def token_value(self) -> str:
        value = self._read(self.token, self.token_file, "api.token")
        assert value is not None
        return value


class IsolationConfig(_Section):
    timeout_s: float = Field(default=10.0, gt=0)
    action: Literal["stop-vms", "reboot", "none"] = "reboot"
    contact_window_s: float | None = Field(default=None, gt=0)  # None: 3 x interval


class WatchdogConfig(_Section):
    backend: Literal["dev", "lab", "none"] = "none"
    device: Path = Path("/dev/watchdog")
    socket: Path | None = None  # lab: the reaper's unix datagram socket
    timeout_s: float = Field(default=10.0, gt=0)  # what the device/reaper enforces

    @model_validator(mode="after")
    def _lab_socket(self) -> WatchdogConfig:
        if self.backend == "lab" and self.socket is None:
            raise ValueError("backend 'lab' needs socket = PATH (the lab reaper's socket)")
        return self


URI_SCHEMES = ("qemu", "qemu+unix", "qemu+ssh", "qemu+tcp", "qemu+tls", "test")


class HypervisorConfig(_Section):
    uri: str = ""  # empty: no hypervisor (heartbeats and probes only)
    inventory_interval_s: float = Field(default=30.0, gt=0)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not value:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in URI_SCHEMES:
            raise ValueError(f"{value!r} is not a libvirt URI this agent drives; use "
                             "qemu:///system, qemu:///embed?root=DIR or qemu+ssh://HOST/system")
        if rest.startswith("/embed") and "root=/" not in rest:
            raise ValueError(f"{value!r}: the embedded driver needs root=ABSOLUTE_DIR")
        return value


class ProbesConfig(_Section):
    """Application probes and guest-agent pings (need a hypervisor and controller.url)."""

    enabled: bool = True
    refresh_s: float = Field(default=5.0, gt=0, le=300)  # probe document from the controller


class CapacityConfig(_Section):
    vcpus: int = Field(default=0, ge=0)
    ram_mb: int = Field(default=0, ge=0)
    disk_gb: int = Field(default=0, ge=0)


class AgentConfig(_Secret):
    """Everything one host agent needs; see docs/agent.md for each key."""

    host: str = Field(min_length=1, max_length=HOST_MAX)
    segment: str = Field(min_length=1, max_length=HOST_MAX)
    address: str = ""  # management address announced to the controller
    state_dir: Path = Path("/var/lib/vmha/agent")
    heartbeat_interval_s: float = Field(default=1.0, gt=0, le=60)
    secret: SecretStr | None = None
    secret_file: Path | None = None
    segment_secret: SecretStr | None = None
    segment_secret_file: Path | None = None
    controller: ControllerConfig
    api: ApiSection
    peers: dict[str, str] = Field(default_factory=dict)  # name -> address[:port]
    isolation: IsolationConfig = Field(default_factory=IsolationConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    hypervisor: HypervisorConfig = Field(default_factory=HypervisorConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)

    @field_validator("peers")
    @classmethod
    def _peers(cls, value: dict[str, str]) -> dict[str, str]:
        for addr in value.values():
            _split_hostport(addr, DEFAULT_AGENT_PORT)
        return value

    @model_validator(mode="after")
    def _no_self_peer(self) -> AgentConfig:
        if self.host in self.peers:
            raise ValueError(f"peers: {self.host!r} is this host itself")
        return self

    def peer_addresses(self) -> dict[str, tuple[str, int]]:
        return {n: _split_hostport(a, DEFAULT_AGENT_PORT) for n, a in self.peers.items()}

    def secret_value(self) -> bytes | None:
        value = self._read(self.secret, self.secret_file, "secret")
        return value.encode() if value else None

    def segment_secret_value(self) -> bytes | None:
        value = self._read(self.segment_secret, self.segment_secret_file, "segment_secret")
        return value.encode() if value else None

    def contact_window_s(self) -> float:
        return self.isolation.contact_window_s or 3 * self.heartbeat_interval_s


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate the agent's TOML file, or raise ConfigError."""
    file_path = Path(path)
    data = read_toml(file_path)
    try:
        cfg = AgentConfig(**data)
    except PydanticValidationError as exc:
        raise ConfigError(describe_validation(exc, file_path, "agent configuration")) from None
    cfg.secret_value()  # unreadable secret files are config errors, found now
    cfg.segment_secret_value()
    cfg.api.token_value()
    cfg.controller.token_value()
    return cfg
