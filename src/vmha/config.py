"""Typed configuration: one TOML file plus VMHA_* environment overrides.

`load_settings(path)` reads the file (path from `--config`, else
`VMHA_CONFIG`, else `vmha.toml` in the working directory when present, else
built-in defaults), applies environment overrides such as
`VMHA_STORE__URL` or `VMHA_API__LISTEN` (`__` separates sections), and
returns a validated `Settings`. Any error becomes a ConfigError that names
the key, the bad value and what is allowed; callers exit before starting.

Settings are passed down as objects; nothing reads them from a global.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vmha.errors import ConfigError, ValidationError

DEFAULT_PORT = 8790
ROLES = ("admin", "operator", "viewer", "agent")


def default_data_dir() -> Path:
    """Where vmha keeps its SQLite database when no URL is configured."""
    if os.geteuid() == 0:
        return Path("/var/lib/vmha")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vmha"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenConfig(_Section):
    """An API bearer token and its role."""

    token: SecretStr | None = None
    token_file: Path | None = None
    role: str
    name: str = ""

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value in ROLES:
            return value
        if value.startswith("project:") and len(value) > len("project:"):
            return value
        raise ValueError(
            f"{value!r} is not a role; allowed: admin, operator, viewer, agent, project:<id>"
        )

    @model_validator(mode="after")
    def _one_source(self) -> TokenConfig:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token or token_file")
        return self

    def secret(self) -> str:
        """The token's value (read from token_file when given)."""
        if self.token is not None:
            return self.token.get_secret_value()
        assert self.token_file is not None
        try:
            value = self.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"api.tokens: cannot read token_file {str(self.token_file)!r}: {exc.strerror}"
            ) from exc
        if not value:
            raise ConfigError(f"api.tokens: token_file {str(self.token_file)!r} is empty")
        return value


class ApiConfig(_Section):
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    tokens: tuple[TokenConfig, ...] = ()
    max_page_size: int = Field(default=1000, ge=1, le=1000)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT (for example 127.0.0.1:8790)")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StoreConfig(_Section):
    url: str = ""  # empty: sqlite file under data_dir
    data_dir: Path = Field(default_factory=default_data_dir)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "postgresql")):
            raise ValueError(
                f"{value!r} is not supported; use sqlite:///PATH or postgresql+psycopg://..."
            )
        return value

    def effective_url(self) -> str:
        return self.url or f"sqlite:///{self.data_dir / 'vmha.db'}"


class HeartbeatConfig(_Section):
    """Where the controller listens for agents' signed UDP heartbeats."""

    enabled: bool = True
    listen: str = "0.0.0.0:8791"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return ApiConfig._listen(value)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class EventsConfig(_Section):
    """Event dispatch: webhooks and the SSE stream (docs/events.md).

    Receivers should reject a `Vmha-Signature` whose `t` is more than
    `replay_window_s` from their clock; vmha signs with its current time on
    every attempt, so retries stay inside the window.
    """

    dispatcher: bool = True  # run the webhook dispatcher in `vmha serve`
    allow_private_destinations: bool = False  # loopback/private/link-local webhook URLs
    max_attempts: int = Field(default=8, ge=1, le=100)  # then the event is a dead letter
    backoff_initial_s: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=300.0, gt=0, le=86400)
    backoff_jitter: float = Field(default=0.2, ge=0, le=1)
    timeout_s: float = Field(default=5.0, gt=0, le=300)  # per webhook POST
    poll_interval_s: float = Field(default=0.05, gt=0, le=10)  # outbox poll (latency)
    refresh_s: float = Field(default=1.0, gt=0, le=600)  # subscriptions reload
    checkpoint_s: float = Field(default=0.25, gt=0, le=60)  # cursors stored this often
    sse_heartbeat_s: float = Field(default=15.0, gt=0, le=3600)
    replay_window_s: int = Field(default=300, ge=1)  # documented for receivers
    source: str = Field(default="vmha", min_length=1, max_length=255)  # CloudEvents source
    # OpenStack notification bus (oslo.messaging; `pip install vmha[amqp]`).
    # Empty: off. E.g. "rabbit://user:password@rabbit.example:5672/".
    amqp_url: SecretStr = SecretStr("")
    amqp_exchange: str = Field(default="notifications", min_length=1, max_length=255)
    amqp_topic: str = Field(default="vmha", min_length=1, max_length=255)
    amqp_publisher_id: str = Field(default="vmha", min_length=1, max_length=255)


class BmcConfig(_Section):
    """One host's baseboard management controller (`[bmcs.<name>]`; a host
    uses the entry named by its `bmc` field, else the one named after it).
    The password is never logged nor shown: prefer `password_file`."""

    username: str
    password: SecretStr | None = None
    password_file: Path | None = None
    ipmi_address: str = ""  # empty: no IPMI for this host
    ipmi_port: int = Field(default=623, gt=0, lt=65536)
    redfish_url: str = ""  # https://BMC[:PORT]; empty: no Redfish
    redfish_system: str = ""  # system id or /redfish/v1/Systems/<id>; empty: the only one
    fence_agent: str = Field(default="", pattern=r"^(fence_[A-Za-z0-9_]+)?$")  # e.g. fence_ipmilan
    fence_agent_options: dict[str, str] = Field(default_factory=dict)  # e.g. {lanplus = "1"}

    @model_validator(mode="after")
    def _one_password(self) -> BmcConfig:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("give exactly one of password or password_file")
        if self.redfish_url and not self.redfish_url.startswith(("https://", "http://")):
            raise ValueError(f"redfish_url {self.redfish_url!r} is not an http(s) URL")
        for key in self.fence_agent_options:
            if any(word in key.lower() for word in ("pass", "secret", "token", "key")):
                raise ValueError(f"fence_agent_options: no secrets in options ({key!r}); "
                                 "the agent gets the password and password_file given here")
        return self

    def secret(self) -> str:
        if self.password is not None:
            return self.password.get_secret_value()
        assert self.password_file is not None
        try:
            return self.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"bmcs: cannot read password_file {str(self.password_file)!r}: {exc.strerror}"
            ) from exc


class FencingConfig(_Section):
    redfish_verify: bool = True  # false: accept any certificate (logged loudly)
    redfish_ca_bundle: Path | None = None
    ipmi_timeout_s: float = Field(default=5.0, gt=0, le=120)
    redfish_timeout_s: float = Field(default=10.0, gt=0, le=120)
    fence_agent_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # Fernet key encrypting the BMC passwords stored through the API (else
    # the environment variable VMHA_SECRET_KEY); without one they cannot be stored.
    secret_key_file: Path | None = None


class CloudConfig(_Section):
    """Which cloud vmha drives. `none`: instances are watched, never
    started (recovery reports that no adapter is configured); `libvirt`:
    vmha defines and starts domains through the hosts' agents."""

    adapter: Literal["none", "libvirt"] = "none"
    image_dir: Path | None = None  # libvirt: <image>/vmlinuz and <image>/initrd.img
    request_timeout_s: float = Field(default=30.0, gt=0, le=300)  # one agent call
    health_timeout_s: float = Field(default=1.0, gt=0, le=30)  # one health_url check


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """The whole configuration of a vmha controller."""

    model_config = SettingsConfigDict(
        env_prefix="VMHA_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    api: ApiConfig = Field(default_factory=ApiConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    fencing: FencingConfig = Field(default_factory=FencingConfig)
    bmcs: dict[str, BmcConfig] = Field(default_factory=dict)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    # Detector, fencing and recovery tunables: the keys and defaults of
    # vmha.engine.settings.ControllerSettings (checked by load_settings).
    controller: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file, which arrives as init kwargs.
        return (env_settings, init_settings)


def resolve_config_path(path: str | Path | None) -> Path | None:
    if path:
        return Path(path)
    env = os.environ.get("VMHA_CONFIG")
    if env:
        return Path(env)
    local = Path("vmha.toml")
    return local if local.is_file() else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read, merge and validate the configuration, or raise ConfigError."""
    file_path = resolve_config_path(path)
    data = read_toml(file_path) if file_path is not None else {}
    try:
        settings = Settings(**data)
    except PydanticValidationError as exc:
        raise ConfigError(describe_validation(exc, file_path)) from None
    for token in settings.api.tokens:
        token.secret()  # a missing token_file is a config error, found now
    controller_settings(settings, file_path)
    for bmc in settings.bmcs.values():
        bmc.secret()  # an unreadable password_file is a config error, found now
    return settings


def controller_settings(settings: Settings, file_path: Path | None = None) -> Any:
    """The engine's ControllerSettings from `[controller]`, or ConfigError."""
    from vmha.engine.settings import ControllerSettings  # the engine is optional here

    try:
        return ControllerSettings.from_mapping(settings.controller)
    except ValidationError as exc:
        where = f"{file_path}: " if file_path else ""
        value = settings.controller.get(exc.field, "?")
        raise ConfigError(
            f"invalid configuration:\n  {where}controller.{exc.field} = {value!r}: {exc.reason}"
        ) from None


SECRET_WORDS = ("token", "secret", "password")


def read_toml(file_path: Path) -> dict[str, Any]:
    """A TOML file as data, or ConfigError saying what is wrong with it."""
    try:
        return tomllib.loads(file_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file_path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(file_path)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file_path}: not valid TOML: {exc}") from exc


def describe_validation(exc: PydanticValidationError, file_path: Path | None,
                        what: str = "configuration") -> str:
    """One line per problem: key, value (secrets and whole tables masked),
    and what is wrong; used by every TOML-configured vmha program."""
    where = f"{file_path}: " if file_path else ""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if any(word in key for word in SECRET_WORDS):
            shown = "***"
        elif isinstance(value, dict):
            shown = "{...}"  # a whole table may hold a password
        else:
            shown = repr(value)
        if err["type"] == "missing":
            shown, msg = "(missing)", "required key"
        lines.append(f"{where}{key} = {shown}: {msg}")
    return f"invalid {what}:\n  " + "\n  ".join(lines)


def hide_password(url: str) -> str:
    """`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, with every secret masked."""
    data = settings.model_dump(mode="json")
    data["store"]["url"] = hide_password(data["store"]["url"])
    for token in data["api"]["tokens"]:
        if token.get("token") is not None:
            token["token"] = "***"
    for bmc in data["bmcs"].values():
        if bmc.get("password") is not None:
            bmc["password"] = "***"
    return data
