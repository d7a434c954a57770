"""MariaDB, RabbitMQ and the bootstrap of the lab cloud, with a cache.

A bootstrapped cloud (schemas synced; Keystone's admin, service user,
services and endpoints; Nova's cells; flavors and an image) takes minutes
to make and is the same every time, so it is made once per venv key and
kept under `/var/lib/vmha/openstack/cache-<key>/`: a `mysqldump` of the
`vmha_*` databases, Keystone's fernet and credential key repositories,
Glance's image files and `secrets.json`. Each `lab up` drops the lab's
databases and loads the dump (a few seconds), so every lab starts from
the same clean cloud. Only `vmha_*` databases, the `vmha_os` users and
the `vmha_openstack` vhost are ever touched.

Called by `vmha.lab.openstack.services`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from vmha.errors import ConfigError
from vmha.lab.net import LabCommandFailed
from vmha.lab.openstack import layout as L
from vmha.lab.openstack.install import openstack_root, venv_key
from vmha.lab.openstack.layout import Paths, Secrets
from vmha.lab.openstack.rest import Session

CACHE_STAMP = ".complete"
CACHE_VERSION = 2  # bump when the bootstrap changes
DUMP = "databases.sql"


def cache_dir() -> Path:
    return openstack_root() / f"cache-{venv_key()}-v{CACHE_VERSION}"


def cached() -> bool:
    return (cache_dir() / CACHE_STAMP).is_file()


def run(cmd: Sequence[str], timeout_s: float = 300.0, stdin: str | None = None,
        log: Path | None = None) -> str:
    """Run a command; LabCommandFailed with the tail of its output on failure."""
    try:
        done = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabCommandFailed(f"{cmd[0]}: {exc}") from exc
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LabCommandFailed(f"{' '.join(cmd[:3])}: exit {done.returncode}: "
                               + " | ".join(tail))
    return done.stdout


def mysql(sql: str) -> str:
    if shutil.which("mysql") is None:
        raise ConfigError("the OpenStack lab needs MariaDB; run scripts/ensure-openstack.sh")
    return run(["mysql", "--batch", "--skip-column-names"], 120.0, stdin=sql)


def reset_databases(sec: Secrets) -> None:
    """Empty `vmha_*` databases and the `vmha_os` user with this password."""
    stmts = []
    for name in L.DATABASES:
        db = f"{L.DB_PREFIX}{name}"
        stmts += [f"DROP DATABASE IF EXISTS {db};",
                  f"CREATE DATABASE {db} CHARACTER SET utf8mb3;"]
    for host in ("127.0.0.1", "localhost"):
        user = f"'{L.DB_USER}'@'{host}'"
        stmts += [f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{sec.db}';",
                  f"ALTER USER {user} IDENTIFIED BY '{sec.db}';"]
        stmts += [f"GRANT ALL PRIVILEGES ON {L.DB_PREFIX}{n}.* TO {user};"
                  for n in L.DATABASES]
    mysql("\n".join(stmts))


def drop_databases() -> None:
    mysql("\n".join(f"DROP DATABASE IF EXISTS {L.DB_PREFIX}{n};" for n in L.DATABASES))


def rabbitmqctl(*args: str, check: bool = True) -> str:
    try:
        return run(["rabbitmqctl", "-q", *args], 60.0)
    except LabCommandFailed:
        if check:
            raise
        return ""


def reset_vhost(sec: Secrets) -> None:
    """A fresh `vmha_openstack` vhost (no queues of an earlier lab) and user."""
    rabbitmqctl("delete_vhost", L.VHOST, check=False)
    rabbitmqctl("add_vhost", L.VHOST)
    if L.AMQP_USER in rabbitmqctl("list_users").split():
        rabbitmqctl("change_password", L.AMQP_USER, sec.amqp)
    else:
        rabbitmqctl("add_user", L.AMQP_USER, sec.amqp)
    rabbitmqctl("set_permissions", "-p", L.VHOST, L.AMQP_USER, ".*", ".*", ".*")


def delete_vhost() -> None:
    rabbitmqctl("delete_vhost", L.VHOST, check=False)


# -- bootstrap (on a cache miss) ------------------------------------------------


def bin_of(venv: Path, name: str) -> str:
    return str(venv / "bin" / name)


def sync_schemas(venv: Path, p: Paths, confs: dict[str, Path], sec: Secrets) -> None:
    """Every service's schema, Keystone's keys and bootstrap, Nova's cells."""
    log = p.logs / "bootstrap.log"
    ks = ["--config-file", str(confs["keystone"])]
    keys = ["--keystone-user", "root", "--keystone-group", "root"]
    for sub in ("fernet-keys", "credential-keys"):
        (p.state / "keystone" / sub).mkdir(parents=True, exist_ok=True)
    run([bin_of(venv, "keystone-manage"), *ks, "db_sync"], log=log)
    run([bin_of(venv, "keystone-manage"), *ks, "fernet_setup", *keys], log=log)
    run([bin_of(venv, "keystone-manage"), *ks, "credential_setup", *keys], log=log)
    endpoint = L.url("keystone", "/v3/")
    run([bin_of(venv, "keystone-manage"), *ks, "bootstrap", "--bootstrap-password", sec.admin,
         "--bootstrap-admin-url", endpoint, "--bootstrap-internal-url", endpoint,
         "--bootstrap-public-url", endpoint, "--bootstrap-region-id", L.REGION], log=log)
    nova = [bin_of(venv, "nova-manage"), "--config-file", str(confs["nova"])]
    run([*nova, "api_db", "sync"], log=log)
    run([*nova, "cell_v2", "map_cell0", "--database_connection", L.db_url(sec, "nova_cell0")],
        log=log)
    run([*nova, "cell_v2", "create_cell", "--name", "cell1", "--database_connection",
         L.db_url(sec, "nova"), "--transport-url", L.transport_url(sec)], log=log)
    run([*nova, "db", "sync"], log=log)
    run([bin_of(venv, "placement-manage"), "--config-file", str(confs["placement"]),
         "db", "sync"], log=log)
    run([bin_of(venv, "glance-manage"), "--config-file", str(confs["glance"]), "db_sync"],
        log=log)
    run([bin_of(venv, "aodh-dbsync"), "--config-file", str(confs["aodh"])], log=log)


SERVICES = (("compute", "nova", "/v2.1"), ("placement", "placement", ""),
            ("image", "glance", ""), ("network", "neutron", ""),
            ("alarming", "aodh", ""))
ENDPOINT_PORT = {"compute": "nova-api", "placement": "placement", "image": "glance",
                 "network": "neutron-stub", "alarming": "aodh-api"}


def register_identity(sec: Secrets) -> None:
    """The service user and project, roles and the catalog (Keystone runs)."""
    s = Session(L.ADMIN_USER, sec.admin, L.ADMIN_PROJECT)
    ident = "identity"
    domain = s.call("GET", ident, "/domains?name=Default")["domains"][0]["id"]
    project = s.call("POST", ident, "/projects", {"project": {
        "name": L.SERVICE_PROJECT, "domain_id": domain}})["project"]["id"]
    user = s.call("POST", ident, "/users", {"user": {
        "name": L.SERVICE_USER, "domain_id": domain, "password": sec.service}})["user"]["id"]
    roles = {r["name"]: r["id"] for r in s.call("GET", ident, "/roles")["roles"]}
    if "service" not in roles:
        roles["service"] = s.call("POST", ident, "/roles",
                                  {"role": {"name": "service"}})["role"]["id"]
    for role in ("admin", "service"):
        s.call("PUT", ident, f"/projects/{project}/users/{user}/roles/{roles[role]}")
    for stype, name, path in SERVICES:
        sid = s.call("POST", ident, "/services",
                     {"service": {"type": stype, "name": name}})["service"]["id"]
        for interface in ("public", "internal", "admin"):
            s.call("POST", ident, "/endpoints", {"endpoint": {
                "service_id": sid, "interface": interface, "region_id": L.REGION,
                "url": L.url(ENDPOINT_PORT[stype], path)}})


def create_flavors_and_image(sec: Secrets) -> None:
    s = Session(L.ADMIN_USER, sec.admin, L.ADMIN_PROJECT)
    for name, (vcpus, ram, disk) in L.FLAVORS.items():
        s.call("POST", "compute", "/flavors", {"flavor": {
            "name": name, "vcpus": vcpus, "ram": ram, "disk": disk}})
    image = s.call("POST", "image", "/v2/images", {
        "name": L.IMAGE, "disk_format": "raw", "container_format": "bare",
        "visibility": "public"})
    s.call("PUT", "image", f"/v2/images/{image['id']}/file", b"vmha lab image\n",
           headers={"Content-Type": "application/octet-stream"})


# -- the cache -----------------------------------------------------------------


def save_cache(p: Paths, sec: Secrets) -> None:
    cache = cache_dir()
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    cache.chmod(0o700)
    dbs = [f"{L.DB_PREFIX}{n}" for n in L.DATABASES]
    (cache / DUMP).write_text(run(["mysqldump", "--single-transaction", "--databases", *dbs],
                                  300.0))
    for sub in ("keystone", "glance"):
        shutil.copytree(p.state / sub, cache / sub, ignore=shutil.ignore_patterns("locks"))
    sec.save(cache / "secrets.json")
    (cache / CACHE_STAMP).write_text("ok\n")


def load_cache(p: Paths) -> Secrets:
    """Restore the cached cloud into this lab: databases and key files."""
    cache = cache_dir()
    sec = Secrets.load(cache / "secrets.json")
    reset_databases(sec)
    run(["mysql"], 300.0, stdin=(cache / DUMP).read_text())
    for sub in ("keystone", "glance"):
        target = p.state / sub
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(cache / sub, target)
    return sec
