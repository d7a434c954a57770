"""The agent's TOML configuration: valid files load, bad ones name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vmha.agent.config import load_agent_config
from vmha.cli.agent import app
from vmha.errors import ConfigError

GOOD = """
host = "host1"
segment = "lab"
secret_file = "{secret}"
[controller]
heartbeat = ["198.18.0.1:8791", "198.18.0.2"]
url = "http://198.18.0.1:8790"
[api]
listen = "198.18.0.11:8792"
token = "t"
[peers]
host2 = "198.18.0.12"
host3 = "198.18.0.13:9000"
[isolation]
timeout_s = 4
action = "stop-vms"
[watchdog]
backend = "lab"
socket = "/run/x.sock"
timeout_s = 6
[capacity]
vcpus = 8
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "secret").write_text("sekrit\n")
    path = tmp_path / "agent.toml"
    path.write_text(text.replace("{secret}", str(tmp_path / "secret")))
    return path


def test_a_complete_file_loads_with_defaults_filled(tmp_path: Path) -> None:
    cfg = load_agent_config(write(tmp_path, GOOD))
    assert cfg.secret_value() == b"sekrit"
    assert cfg.controller.addresses() == [("198.18.0.1", 8791), ("198.18.0.2", 8791)]
    assert cfg.peer_addresses() == {"host2": ("198.18.0.12", 8792),
                                    "host3": ("198.18.0.13", 9000)}
    assert cfg.heartbeat_interval_s == 1.0 and cfg.contact_window_s() == 3.0
    assert cfg.isolation.action == "stop-vms" and cfg.capacity.vcpus == 8
    assert cfg.api.hostport() == ("198.18.0.11", 8792)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("segment = \"lab\"", "segment = \"lab\"\ncolour = 1"), "colour"),
        (("timeout_s = 4", "timeout_s = -1"), "isolation.timeout_s"),
        (("action = \"stop-vms\"", "action = \"explode\""), "isolation.action"),
        (("backend = \"lab\"", "backend = \"pigeon\""), "watchdog.backend"),
        (("socket = \"/run/x.sock\"", ""), "watchdog"),
        (("host2 = \"198.18.0.12\"", "host2 = \"nowhere:port\""), "peers"),
        (("listen = \"198.18.0.11:8792\"", "listen = \"198.18.0.11\""), "api.listen"),
        (("token = \"t\"", ""), "api"),
        (("host = \"host1\"", ""), "host"),
        (("[peers]", "[peers]\nhost1 = \"198.18.0.11\""), "itself"),
        (("url = \"http://198.18.0.1:8790\"", "url = \"198.18.0.1:8790\""), "controller.url"),
        (("url = \"http://198.18.0.1:8790\"", "url = [\"http://a:1\", \"ftp://b\"]"),
         "controller.url_alternates"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path: Path, change: tuple[str, str], named: str
                                       ) -> None:
    with pytest.raises(ConfigError) as err:
        load_agent_config(write(tmp_path, GOOD.replace(*change)))
    assert named in err.value.detail


def test_controller_url_may_list_every_controller(tmp_path: Path) -> None:
    assert load_agent_config(write(tmp_path, GOOD)).controller.api_urls() == (
        "http://198.18.0.1:8790",)
    several = GOOD.replace('url = "http://198.18.0.1:8790"',
                           'url = ["http://198.18.0.2:8790", "http://198.18.0.3:8790"]')
    cfg = load_agent_config(write(tmp_path, several)).controller
    assert cfg.url == "http://198.18.0.2:8790"  # the first one, as a single URL
    assert cfg.api_urls() == ("http://198.18.0.2:8790", "http://198.18.0.3:8790")


def test_secrets_are_never_echoed(tmp_path: Path) -> None:
    text = GOOD.replace('token = "t"', 'token = 12345678')
    with pytest.raises(ConfigError) as err:
        load_agent_config(write(tmp_path, text))
    assert "12345678" not in err.value.detail and "api.token" in err.value.detail


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    (tmp_path / "secret").unlink()
    with pytest.raises(ConfigError, match="secret_file"):
        load_agent_config(path)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_agent_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_agent_config(write(tmp_path, "host = "))


def test_cli_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("timeout_s = 4", "timeout_s = 0"))
    result = CliRunner().invoke(app, ["--config", str(path)])
    assert result.exit_code == 2


def test_module_entry_point_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("vcpus = 8", "vcpus = -8"))
    done = subprocess.run([sys.executable, "-m", "vmha.agent", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "capacity.vcpus" in done.stderr


def test_hypervisor_section_defaults_to_none_and_takes_libvirt_uris(tmp_path: Path) -> None:
    cfg = load_agent_config(write(tmp_path, GOOD))
    assert cfg.hypervisor.uri == "" and cfg.hypervisor.inventory_interval_s == 30
    text = GOOD + '[hypervisor]\nuri = "qemu:///embed?root=/var/lib/vmha/libvirt"\n' \
        "inventory_interval_s = 5\n"
    cfg = load_agent_config(write(tmp_path, text))
    assert cfg.hypervisor.uri.startswith("qemu:///embed")
    assert cfg.hypervisor.inventory_interval_s == 5


@pytest.mark.parametrize("uri", ["xen:///system", "/var/run/libvirt.sock",
                                 "qemu:///embed?root=relative"])
def test_a_bad_hypervisor_uri_is_a_config_error_naming_it(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_agent_config(write(tmp_path, GOOD + f'[hypervisor]\nuri = "{uri}"\n'))
    assert "hypervisor.uri" in err.value.detail and uri in err.value.detail
