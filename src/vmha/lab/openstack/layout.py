"""Where the lab cloud lives: names, ports, paths and its secrets.

Every name the lab cloud creates outside its own directory starts with
`vmha` so it never touches anyone else's data: MariaDB databases
`vmha_*` and user `vmha_os`, RabbitMQ vhost `vmha_openstack` and user
`vmha_os`. The APIs listen on the lab's root bridge (198.18.0.1), where
the hosts' `nova-compute` reach them, on ports below 32768.

`Secrets` are generated once per bootstrap cache (they are baked into
the cached databases) and kept in `secrets.json` (mode 0600) beside the
cache. Standard library only.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from vmha.lab import net

ADDR = net.BRIDGE_ADDR
PORTS = {
    "keystone": 5000, "nova-api": 8774, "placement": 8778, "glance": 9292,
    "neutron-stub": 9696, "aodh-api": 8042, "amqp-relay": 5672,
}
REGION = "RegionOne"
DATABASES = ("keystone", "nova_api", "nova_cell0", "nova", "placement", "glance", "aodh")
DB_USER = "vmha_os"
DB_PREFIX = "vmha_"
VHOST = "vmha_openstack"
VMHA_EXCHANGE = "vmha"  # the lab controller's [events] amqp_exchange (Ceilometer reads it)
VMHA_TOPIC = "notifications"  # ... and its amqp_topic: the topic Ceilometer listens to
AMQP_USER = "vmha_os"
AMQP_LOCAL = ("127.0.0.1", 5672)  # the machine's broker, relayed onto the bridge
ADMIN_USER, ADMIN_PROJECT = "admin", "admin"
SERVICE_USER, SERVICE_PROJECT = "vmha-services", "service"
DOMAIN = "Default"
FLAVORS = {"vmha.tiny": (1, 128, 1), "vmha.small": (1, 512, 1), "vmha.large": (2, 2048, 1)}
IMAGE = "vmha-lab-image"
# Marks every OpenStack process the lab starts (in its environment), so
# `down` finds gunicorn and oslo workers too; the value is the lab's dir.
ENV_MARK = "VMHA_OPENSTACK_LAB"


def url(service: str, path: str = "") -> str:
    return f"http://{ADDR}:{PORTS[service]}{path}"


def auth_url() -> str:
    return url("keystone", "/v3")


@dataclass(frozen=True)
class Secrets:
    db: str
    amqp: str
    admin: str
    service: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(*(secrets.token_hex(16) for _ in range(4)))

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh)

    @classmethod
    def load(cls, path: Path) -> Secrets:
        return cls(**json.loads(path.read_text()))


def db_url(sec: Secrets, name: str) -> str:
    return f"mysql+pymysql://{DB_USER}:{sec.db}@127.0.0.1/{DB_PREFIX}{name}?charset=utf8"


def transport_url(sec: Secrets) -> str:
    return f"rabbit://{AMQP_USER}:{sec.amqp}@{ADDR}:{PORTS['amqp-relay']}/{VHOST}"


@dataclass(frozen=True)
class Paths:
    """The lab cloud's files under the lab directory (`DIR/openstack`)."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def conf(self, service: str, name: str) -> Path:
        return self.etc / service / name
