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

import dataclasses
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vmha.domain.bmc import bmc_address_problems, ipmi_password_problem
from vmha.errors import ConfigError, ValidationError
from vmha.redact import hidden_value, hide_password, looks_secret, scrub

__all__ = ["Settings", "hide_password", "load_settings", "masked"]

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
    # Largest request body (bytes), checked before the body is parsed. The
    # largest legitimate bodies: an agent's inventory of many domains, a
    # domain XML (200,000 characters).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    # HTTPS served by uvicorn itself (else put a TLS reverse proxy in front)
    tls_cert_file: Path | None = None  # PEM certificate chain
    tls_key_file: Path | None = None  # PEM private key

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file is not None else "http"

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
            scheme = value.partition(":")[0][:32]
            raise ValueError(
                f"scheme {scheme!r} is not supported; use sqlite:///PATH or "
                "postgresql+psycopg://..."
            )
        return value

    def effective_url(self) -> str:
        return self.url or f"sqlite:///{self.data_dir / 'vmha.db'}"


class HeartbeatConfig(_Section):
    """Where the controller listens for agents' signed UDP heartbeats."""

    enabled: bool = True
    listen: str = "0.0.0.0:8791"
    # Kernel buffer for heartbeats waiting to be read: 16 MiB holds about
    # four seconds of 10,000 hosts' heartbeats (Linux accounts ~830 bytes per
    # heartbeat against twice this size). Past net.core.rmem_max only as
    # root; otherwise a warning at start.
    receive_buffer_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024,
                                      le=1024 * 1024 * 1024)

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
    # a backlog's webhook requests in flight on one connection (1: one at a
    # time; docs/events.md "Retries, order and dead letters")
    pipeline: int = Field(default=16, ge=1, le=64)
    sse_heartbeat_s: float = Field(default=15.0, gt=0, le=3600)
    replay_window_s: int = Field(default=300, ge=1)  # documented for receivers
    source: str = Field(default="vmha", min_length=1, max_length=255)  # CloudEvents source
    # OpenStack notification bus (oslo.messaging; `pip install vmha[amqp]`).
    # Empty: off. E.g. "rabbit://user:password@rabbit.example:5672/".
    amqp_url: SecretStr = SecretStr("")
    amqp_exchange: str = Field(default="notifications", min_length=1, max_length=255)
    amqp_topic: str = Field(default="vmha", min_length=1, max_length=255)
    amqp_publisher_id: str = Field(default="vmha", min_length=1, max_length=255)
    # The project_id/tenant_id of notifications about no project (hosts,
    # segments): e.g. the operators' Keystone project, whose Aodh alarms
    # then match them (docs/openstack.md). Empty: none.
    amqp_project_id: str = Field(default="", max_length=255)
    # "severity": priority INFO/WARN/ERROR/CRITICAL from the event's severity;
    # "ceilometer": INFO or ERROR only, the two Ceilometer's event pipeline reads.
    amqp_priorities: Literal["severity", "ceilometer"] = "severity"


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
        try:
            bmc_address_problems(self.ipmi_address, self.redfish_url)
        except ValidationError as exc:
            raise ValueError(f"{exc.field}: {exc.reason}") from None
        for key in self.fence_agent_options:
            if looks_secret(key):
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


class TenantNetwork(_Section):
    """A network offered to project tokens: the host bridge their NICs may
    join and the addresses they may use on it (`spec.address`,
    `spec.gateway`, the hosts of `spec.health_url` and http probes)."""

    bridge: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")  # a Linux interface name
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network like 198.18.1.0/24") from exc
        return value

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr, strict=False)


class TenantsConfig(_Section):
    """What project tokens may choose; they pick from what the admin offers
    (docs/api.md, "What tenants may choose"). Admins and operators are not
    limited by this section."""

    images: tuple[str, ...] | None = None  # None: every image under [cloud] image_dir
    networks: tuple[TenantNetwork, ...] = ()  # none: tenants give no spec (no bridge)
    max_priority: int = Field(default=500, ge=0, le=1000)  # of their inline policies
    exec_commands: tuple[str, ...] = ()  # the exact commands their exec probes may run


class CloudConfig(_Section):
    """Which cloud vmha drives. `none`: instances are watched, never
    started (recovery reports that no adapter is configured); `libvirt`:
    vmha defines and starts domains through the hosts' agents; `openstack`:
    Nova evacuates, vmha decides when (`[openstack]`, docs/openstack.md)."""

    adapter: Literal["none", "libvirt", "openstack"] = "none"
    image_dir: Path | None = None  # libvirt: <image>/vmlinuz and <image>/initrd.img
    request_timeout_s: float = Field(default=30.0, gt=0, le=300)  # one agent call
    health_timeout_s: float = Field(default=1.0, gt=0, le=30)  # one health_url check


class MetricsConfig(_Section):
    """`GET /metrics` (Prometheus), token-protected like the API."""

    # per-host heartbeat age and phi series only up to this many hosts
    per_host_limit: int = Field(default=200, ge=0, le=100_000)
    poll_s: float = Field(default=1.0, gt=0, le=60)  # how often new job ends are read


class CoordinationConfig(_Section):
    """Several controllers (issue 15): `url` is `local` (one controller, the
    default) or `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`. Every controller
    sharing a store must name the same etcd cluster and prefix, and have a
    `name` of its own; `api_url` is how the others (and the CLI) reach its
    API, `heartbeat` the address agents send heartbeats to."""

    url: str = "local"
    name: str = ""  # default: this machine's host name
    api_url: str = ""  # default: http://<api.listen>
    heartbeat: str = ""  # default: heartbeat.listen
    lease_s: float = Field(default=5.0, ge=2, le=60)  # the leader's lease in etcd
    step_s: float = Field(default=0.0, ge=0, le=20)  # a round every; 0: lease_s / 5

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value != "local" and not value.startswith("etcd://"):
            raise ValueError(f"{value!r}: use 'local' or etcd://HOST:PORT[,HOST:PORT...]")
        return value

    def round_s(self) -> float:
        return self.step_s or self.lease_s / 5


def _read_secret(where: str, path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {str(path)!r}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{where}: {str(path)!r} is empty")
    return value


class OpenStackConfig(_Section):
    """How vmha logs in to an OpenStack cloud (`[cloud] adapter =
    "openstack"`): a clouds.yaml entry (`cloud`), or explicit values with a
    password or an application credential. Secrets are best given as files
    (`password_file`, `application_credential_secret_file`); they are never
    logged nor shown. The user needs the admin role (docs/openstack.md)."""

    cloud: str = ""  # a clouds.yaml entry (OS_CLIENT_CONFIG_FILE or the usual places)
    auth_url: str = ""
    region_name: str = ""
    interface: Literal["public", "internal", "admin"] = "public"
    username: str = ""
    password: SecretStr | None = None
    password_file: Path | None = None
    project_name: str = ""
    project_id: str = ""
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    application_credential_id: str = ""
    application_credential_secret: SecretStr | None = None
    application_credential_secret_file: Path | None = None
    ca_bundle: Path | None = None  # PEM bundle that signs Keystone's and Nova's certificates
    verify: bool = True  # false: accept any certificate (logged loudly)
    timeout_s: float = Field(default=30.0, gt=0, le=300)  # one API call
    retry_s: float = Field(default=45.0, ge=0, le=600)  # transient failures, per port call
    # who picks each evacuation's target: vmha's planner (capacity, priority,
    # anti-affinity, reserved hosts) or Nova's scheduler (no host named)
    target: Literal["planner", "scheduler"] = "planner"
    # Inventory (docs/openstack.md): hosts from nova-compute services, servers
    # of every project; re-read every interval and soon after a Nova
    # notification on `notifications_url` (the cloud's bus; empty: none).
    inventory_interval_s: float = Field(default=60.0, gt=0, le=86400)
    inventory_min_gap_s: float = Field(default=1.0, ge=0, le=600)
    segments: Literal["aggregate", "manual"] = "manual"  # aggregate: a segment per aggregate
    default_segment: str = Field(default="default", min_length=1, max_length=64)
    evacuable_tags: bool = False  # RHOSO-style: only `evacuable=true` flavors/images move
    notifications_url: SecretStr = SecretStr("")  # e.g. rabbit://user:pw@rabbit:5672/
    notifications_topics: tuple[str, ...] = ("notifications", "versioned_notifications")
    notifications_exchange: str = Field(default="nova", min_length=1, max_length=255)

    @model_validator(mode="after")
    def _one_way_in(self) -> OpenStackConfig:
        if self.auth_url and not self.auth_url.startswith(("https://", "http://")):
            raise ValueError(f"auth_url {self.auth_url!r} is not an http(s) URL")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.application_credential_secret is not None
                and self.application_credential_secret_file is not None):
            raise ValueError("give application_credential_secret or its _file, not both")
        return self

    def check(self) -> None:
        """For `[cloud] adapter = "openstack"`: ConfigError naming what is missing."""
        if not self.cloud and not self.auth_url:
            raise ConfigError('openstack: [cloud] adapter = "openstack" needs '
                              "openstack.cloud (a clouds.yaml entry) or openstack.auth_url")
        if self.cloud:
            return
        if self.application_credential_id:
            self.app_secret()
            return
        for key in ("username",):
            if not getattr(self, key):
                raise ConfigError(f"openstack.{key}: required with openstack.auth_url")
        if not (self.project_name or self.project_id):
            raise ConfigError("openstack.project_name: required with openstack.auth_url "
                              "(or project_id)")
        self.secret()

    def secret(self) -> str:
        """The password (read from password_file when given)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            if self.cloud or self.application_credential_id:
                return ""
            raise ConfigError("openstack.password_file: give a password (file) or an "
                              "application credential")
        return _read_secret("openstack.password_file", self.password_file)

    def app_secret(self) -> str:
        if self.application_credential_secret is not None:
            return self.application_credential_secret.get_secret_value()
        if self.application_credential_secret_file is None:
            raise ConfigError("openstack.application_credential_secret_file: required with "
                              "openstack.application_credential_id")
        return _read_secret("openstack.application_credential_secret_file",
                            self.application_credential_secret_file)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"  # json: one JSON object per line


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
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    fencing: FencingConfig = Field(default_factory=FencingConfig)
    bmcs: dict[str, BmcConfig] = Field(default_factory=dict)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    tenants: TenantsConfig = Field(default_factory=TenantsConfig)
    coordination: CoordinationConfig = Field(default_factory=CoordinationConfig)


    openstack: OpenStackConfig = Field(default_factory=OpenStackConfig)
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
    check_unique_tokens(settings.api.tokens, file_path)
    controller_settings(settings, file_path)
    for name, bmc in settings.bmcs.items():
        password = bmc.secret()  # an unreadable password_file is a config error, found now
        problem = ipmi_password_problem(password, bmc.ipmi_address, bmc.fence_agent)
        if problem is not None:
            where = f"{file_path}: " if file_path else ""
            raise ConfigError(problems([f"{where}bmcs.{name}.password = ***: {problem}"]))
    if settings.cloud.adapter == "openstack":
        settings.openstack.check()
    return settings


def check_unique_tokens(tokens: tuple[TokenConfig, ...], file_path: Path | None) -> None:
    """Every token readable (a missing token_file is found now) and given
    once: the same token twice would get whichever role comes first."""
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        value = token.secret()
        if value in seen:
            first = tokens[seen[value]]
            where = f"{file_path}: " if file_path else ""
            roles = ("the same role" if first.role == token.role
                     else f"roles {first.role!r} and {token.role!r}")
            raise ConfigError(problems([
                f"{where}api.tokens[{index}].token = ***: the same token as "
                f"api.tokens[{seen[value]}] ({roles}); give every token once"]))
        seen[value] = index


def controller_settings(settings: Settings, file_path: Path | None = None) -> Any:
    """The engine's ControllerSettings from `[controller]` (and, on
    OpenStack, `[openstack] target` as `evacuation_target`), or ConfigError."""
    from vmha.engine.settings import ControllerSettings  # the engine is optional here

    data = dict(settings.controller)
    if settings.cloud.adapter == "openstack":
        data.setdefault("evacuation_target", settings.openstack.target)
    try:
        return ControllerSettings.from_mapping(data)
    except ValidationError as exc:
        where = f"{file_path}: " if file_path else ""
        key = f"controller.{exc.field}"
        known = exc.field in {f.name for f in dataclasses.fields(ControllerSettings)}
        shown = hidden_value(key, data.get(exc.field, "?"), known=known)
        raise ConfigError(problems([f"{where}{key} = {shown}: {exc.reason}"])) from None


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
        unknown = err["type"] == "extra_forbidden"  # a misspelt key may hold a secret
        shown = hidden_value(key, value, known=not unknown)
        msg = "unknown key" if unknown else scrub(err["msg"].removeprefix("Value error, "),
                                                  value, shown)
        if err["type"] == "missing":
            shown, msg = "(missing)", "required key"
        lines.append(f"{where}{key} = {shown}: {msg}")
    return problems(lines, what)


def problems(lines: list[str], what: str = "configuration") -> str:
    """One problem on one line; several under a heading, one per line."""
    if len(lines) == 1:
        return f"invalid {what}: {lines[0]}"
    return f"invalid {what}:\n  " + "\n  ".join(lines)


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
    for key in ("password", "application_credential_secret"):
        if data["openstack"].get(key) is not None:
            data["openstack"][key] = "***"
    return data
