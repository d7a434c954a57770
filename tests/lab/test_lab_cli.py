"""`vmha lab` as a command: one-line errors and exit codes (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vmha.agent.config import load_agent_config
from vmha.cli.lab import app
from vmha.config import load_settings
from vmha.errors import ValidationError
from vmha.lab import controllers, state
from vmha.lab import lab as lab_ops
from vmha.lab.controller import write_config


def test_missing_tools_are_named_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["up", "--dir", str(tmp_path)], env={"PATH": str(tmp_path)})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "needs" in lines[0] and ("root" in lines[0] or "iptables" in lines[0])


def test_status_without_a_lab_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_unknown_fault_is_refused(tmp_path: Path) -> None:
    state.save(tmp_path, {"hosts": {"host1": {}}})
    result = CliRunner().invoke(app, ["fail", "host1", "meteor", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "meteor" in result.output


def test_state_is_written_atomically_and_privately(tmp_path: Path) -> None:
    state.save(tmp_path, {"hosts": {"host1": {"secret": "x"}}})
    path = tmp_path / state.STATE_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert state.load(tmp_path)["hosts"]["host1"]["secret"] == "x"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"hosts": 0}, "hosts"), ({"controller_port": 40000}, "controller_port"),
     ({"isolation_action": "explode"}, "isolation_action"), ({"controllers": 0}, "controllers"),
     ({"controllers": 6}, "controllers"), ({"controllers": 3, "start_controller": False},
                                           "controllers"),
     ({"controllers": 3, "cloud": "openstack"}, "controllers"), ({"lease_s": 1}, "lease_s")],
)
def test_bad_lab_settings_name_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        lab_ops.LabSettings(**settings).validate()  # type: ignore[arg-type]


def test_agent_config_of_a_lab_host_is_valid(tmp_path: Path) -> None:
    st = {
        "settings": lab_ops.asdict(lab_ops.LabSettings()), "segment_secret": "g" * 64,
        "agent_token": "tok", "controller": {"url": None},
        "hosts": {f"host{i}": {"address": f"198.18.0.{10 + i}", "dir": str(tmp_path / str(i)),
                               "secret": "s" * 64, "libvirt_root": f"/var/lib/vmha/hv/host{i}"}
                  for i in (1, 2, 3)},
    }
    path = tmp_path / "agent.toml"
    path.write_text(lab_ops._agent_toml(st, "host2"))
    cfg = load_agent_config(path)
    assert cfg.host == "host2" and set(cfg.peers) == {"host1", "host3"}
    assert cfg.controller.addresses() == [("198.18.0.1", 8791)]
    assert cfg.watchdog.backend == "lab" and cfg.api.hostport() == ("198.18.0.12", 8792)
    assert cfg.hypervisor.uri == "qemu:///embed?root=/var/lib/vmha/hv/host2"


def test_agents_of_a_several_controller_lab_list_every_controller(tmp_path: Path) -> None:
    st = {
        "settings": lab_ops.asdict(lab_ops.LabSettings(controllers=3)),
        "segment_secret": "g" * 64, "agent_token": "tok",
        "controller": {"url": "http://198.18.0.241:8790", "healthy": True, "agent_token": "a"},
        "controllers": {f"controller{i}": {"address": controllers.address(i),
                                           "url": f"http://{controllers.address(i)}:8790"}
                        for i in (1, 2, 3)},
        "hosts": {f"host{i}": {"address": f"198.18.0.{10 + i}", "dir": str(tmp_path / str(i)),
                               "secret": "s" * 64, "libvirt_root": f"/var/lib/vmha/hv/host{i}"}
                  for i in (1, 2)},
    }
    path = tmp_path / "agent.toml"
    path.write_text(lab_ops._agent_toml(st, "host1"))
    cfg = load_agent_config(path)
    assert cfg.controller.addresses() == [(f"198.18.0.{240 + i}", 8791) for i in (1, 2, 3)]
    assert cfg.controller.api_urls() == tuple(f"http://198.18.0.{240 + i}:8790"
                                              for i in (1, 2, 3))


def test_a_lab_controller_config_on_postgresql_and_etcd_loads(tmp_path: Path) -> None:
    key = tmp_path / "secret.key"
    key.write_text("k" * 44)
    (tmp_path / "pw").write_text("secret\n")
    bmcs = {"host1": {"ipmi": {"username": "admin", "address": "198.18.0.1", "port": 6231},
                      "redfish": {"url": "https://198.18.0.1:8441", "system": "host1",
                                  "ca_bundle": str(tmp_path / "ca.pem")},
                      "password_file": str(tmp_path / "pw")}}
    path = write_config(tmp_path / "c1", controllers.address(1), 8790,
                        {"admin": "adm", "agent": "agt"},
                        lab_ops.asdict(lab_ops.LabSettings(controllers=3)), bmcs,
                        store_url=controllers.store_url(), fencing={"secret_key_file": str(key)},
                        extra='[coordination]\nurl = "etcd://198.18.0.1:23771/vmha-lab"\n'
                              'name = "controller1"\n')
    cfg = load_settings(path)
    assert cfg.store.url == controllers.store_url()
    assert cfg.fencing.secret_key_file == key
    assert cfg.fencing.redfish_ca_bundle == tmp_path / "ca.pem"
    assert cfg.coordination.name == "controller1"
