"""The lab cloud's configuration files (oslo.config INI), written per lab.

One file per service under `DIR/openstack/etc/<service>/`; each `nova-compute`
gets `etc/nova/compute-<host>.conf` on top of `nova.conf` (its host name,
address, state path and the capacity the lab gives it). Facts from
LAB-NOTES: the fake driver `fake.FakeDriverWithoutFakeNodes` (plain
`FakeDriver` cannot restart after a kill), MariaDB for every database,
`shuffle_best_same_weighed_hosts` (or everything stacks on one host), one
worker per service (2 cores). Services authenticate to each other through
the real Keystone with one service user.

Called by `vmha.lab.openstack.services`; returns paths, does no other I/O.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from vmha.lab.openstack import layout as L
from vmha.lab.openstack.layout import Paths, Secrets

Sections = Mapping[str, Mapping[str, object]]
# The fake driver offers 800000 MB and 1000 vCPUs: the lab reserves all but
# this much so that capacity (and "not enough room") is real.
COMPUTE_RAM_MB = 4096
COMPUTE_VCPUS = 16
FAKE_RAM_MB, FAKE_VCPUS = 800000, 1000
# The repository's etc/ (Ceilometer's event definitions for vmha)
ETC = Path(__file__).resolve().parents[4] / "etc"


def ini(sections: Sections) -> str:
    out = []
    for name, opts in sections.items():
        out.append(f"[{name}]")
        for key, value in opts.items():
            for one in value if isinstance(value, list) else [value]:  # a MultiStrOpt
                text = ("true" if one else "false") if isinstance(one, bool) else one
                out.append(f"{key} = {text}")
        out.append("")
    return "\n".join(out)


def _write(path: Path, sections: Sections) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ini(sections))
    path.chmod(0o600)
    return path


def service_auth(sec: Secrets) -> dict[str, object]:
    """keystoneauth options of the services' own user (password auth)."""
    return {"auth_type": "password", "auth_url": L.url("keystone", "/v3"),
            "project_name": L.SERVICE_PROJECT, "project_domain_name": L.DOMAIN,
            "username": L.SERVICE_USER, "user_domain_name": L.DOMAIN,
            "password": sec.service, "region_name": L.REGION}


def authtoken(sec: Secrets) -> dict[str, object]:
    return {"www_authenticate_uri": L.url("keystone", "/v3"),
            "service_token_roles_required": True, **service_auth(sec)}


def notifications() -> dict[str, object]:
    return {"driver": "messagingv2", "topics": "notifications"}


def keystone(p: Paths, sec: Secrets) -> Path:
    return _write(p.conf("keystone", "keystone.conf"), {
        "DEFAULT": {"use_stderr": True},
        "database": {"connection": L.db_url(sec, "keystone")},
        "token": {"provider": "fernet"},
        "fernet_tokens": {"key_repository": p.state / "keystone" / "fernet-keys"},
        "fernet_receipts": {"key_repository": p.state / "keystone" / "fernet-keys"},
        "credential": {"key_repository": p.state / "keystone" / "credential-keys"},
        "cache": {"enabled": False},
    })


def placement(p: Paths, sec: Secrets) -> Path:
    return _write(p.conf("placement", "placement.conf"), {
        "DEFAULT": {"use_stderr": True},
        "placement_database": {"connection": L.db_url(sec, "placement")},
        "api": {"auth_strategy": "keystone"},
        "keystone_authtoken": authtoken(sec),
    })


def _nova_common(p: Paths, sec: Secrets) -> dict[str, dict[str, object]]:
    """What every Nova service reads; only the controller-side ones get the
    databases (a compute reaches them through the conductor, as in a real
    cloud, and the lab's computes could not reach MariaDB anyway)."""
    return {
        "DEFAULT": {"transport_url": L.transport_url(sec), "use_stderr": True,
                    "compute_driver": "fake.FakeDriverWithoutFakeNodes",
                    "state_path": p.state / "nova", "my_ip": L.ADDR,
                    "instance_name_template": "vmha-%(uuid)s"},
        "keystone_authtoken": authtoken(sec),
        "service_user": {"send_service_user_token": True, **service_auth(sec)},
        "placement": service_auth(sec),
        "neutron": {**service_auth(sec), "endpoint_override": L.url("neutron-stub")},
        "glance": {"region_name": L.REGION},
        "oslo_concurrency": {"lock_path": p.state / "nova" / "locks"},
        "notifications": {"notification_format": "both",
                          "notify_on_state_change": "vm_and_task_state"},
        "oslo_messaging_notifications": notifications(),
        "oslo_messaging_rabbit": {"heartbeat_timeout_threshold": 30},
    }


def nova(p: Paths, sec: Secrets, venv: Path) -> Path:
    paste = p.conf("nova", "api-paste.ini")
    paste.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(venv / "etc" / "nova" / "api-paste.ini", paste)
    common = _nova_common(p, sec)
    _write(p.conf("nova", "compute.conf"), common)
    return _write(p.conf("nova", "nova.conf"), {
        **common,
        "api": {"auth_strategy": "keystone"},
        "wsgi": {"api_paste_config": paste},
        "api_database": {"connection": L.db_url(sec, "nova_api")},
        "database": {"connection": L.db_url(sec, "nova")},
        "conductor": {"workers": 1},
        "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": 2},
        "filter_scheduler": {"shuffle_best_same_weighed_hosts": True},
    })


def compute(p: Paths, host: str, address: str, host_dir: Path) -> Path:
    """What one lab host's nova-compute adds to compute.conf."""
    return _write(p.conf("nova", f"compute-{host}.conf"), {
        "DEFAULT": {"host": host, "my_ip": address, "state_path": host_dir / "nova",
                    "reserved_host_memory_mb": FAKE_RAM_MB - COMPUTE_RAM_MB,
                    "reserved_host_cpus": FAKE_VCPUS - COMPUTE_VCPUS,
                    "cpu_allocation_ratio": 1.0, "ram_allocation_ratio": 1.0},
        "oslo_concurrency": {"lock_path": host_dir / "nova" / "locks"},
    })


def glance(p: Paths, sec: Secrets, venv: Path) -> Path:
    paste = p.conf("glance", "glance-api-paste.ini")
    paste.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(venv / "etc" / "glance" / "glance-api-paste.ini", paste)
    images = p.state / "glance"
    return _write(p.conf("glance", "glance-api.conf"), {
        "DEFAULT": {"use_stderr": True, "enabled_backends": "fs:file"},
        "glance_store": {"default_backend": "fs"},
        "fs": {"filesystem_store_datadir": images / "images"},
        "os_glance_staging_store": {"filesystem_store_datadir": images / "staging"},
        "os_glance_tasks_store": {"filesystem_store_datadir": images / "tasks"},
        "database": {"connection": L.db_url(sec, "glance")},
        "keystone_authtoken": authtoken(sec),
        "paste_deploy": {"flavor": "keystone", "config_file": paste},
        "oslo_concurrency": {"lock_path": images / "locks"},
    })


def ceilometer(p: Paths, sec: Secrets, venv: Path) -> Path:
    """The notification agent: Nova's and vmha's exchanges, the event
    pipeline only, vmha's event definitions appended to Ceilometer's own
    (from the repository's etc/ceilometer), every event to Aodh."""
    here = p.etc / "ceilometer"
    here.mkdir(parents=True, exist_ok=True)
    data = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "ceilometer" / "pipeline" / "data"
    defs = here / "event_definitions.yaml"
    defs.write_text((data / "event_definitions.yaml").read_text() + "\n"
                    + (ETC / "ceilometer" / "event_definitions.vmha.yaml").read_text())
    pipeline = here / "event_pipeline.yaml"
    shutil.copyfile(ETC / "ceilometer" / "event_pipeline.vmha.yaml", pipeline)
    return _write(here / "ceilometer.conf", {
        "DEFAULT": {"transport_url": L.transport_url(sec), "use_stderr": True,
                    "event_pipeline_cfg_file": pipeline},
        "notification": {"notification_control_exchanges": ["nova", L.VMHA_EXCHANGE],
                         "pipelines": ["event"], "workers": 1},
        "event": {"definitions_cfg_file": defs},
        "oslo_messaging_notifications": {"topics": "notifications"},
        "service_credentials": {**service_auth(sec), "interface": "public"},
    })


def aodh(p: Paths, sec: Secrets, venv: Path) -> Path:
    conf = p.conf("aodh", "aodh.conf")
    # Aodh's paste filters read their options from a config file of their own
    # finding (project "aodh", /etc/aodh): point them at this one.
    packaged = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "aodh" / "api" / "api-paste.ini"
    paste = p.conf("aodh", "api-paste.ini")
    paste.parent.mkdir(parents=True, exist_ok=True)
    paste.write_text(packaged.read_text().replace(
        "oslo_config_project = aodh", f"oslo_config_project = aodh\noslo_config_file = {conf}"))
    return _write(conf, {
        # Ceilometer's notifier publishes on its own exchange: read that one
        # Aodh caches a project's event alarms for 60 s: an alarm created
        # just after an event of its project would not fire until then
        "DEFAULT": {"transport_url": L.transport_url(sec), "use_stderr": True,
                    "control_exchange": "ceilometer", "event_alarm_cache_ttl": 0},
        "database": {"connection": L.db_url(sec, "aodh")},
        "api": {"auth_mode": "keystone", "paste_config": paste},
        "keystone_authtoken": authtoken(sec),
        "service_credentials": {**service_auth(sec), "interface": "public"},
        "listener": {"event_alarm_topic": "alarm.all", "workers": 1},
        "notifier": {"workers": 1},
        "evaluator": {"workers": 1},
    })


def write_all(p: Paths, sec: Secrets, venv: Path) -> dict[str, Path]:
    """Every root-namespace service's file; the map service -> main file."""
    return {"keystone": keystone(p, sec), "placement": placement(p, sec),
            "nova": nova(p, sec, venv), "glance": glance(p, sec, venv),
            "ceilometer": ceilometer(p, sec, venv), "aodh": aodh(p, sec, venv)}
