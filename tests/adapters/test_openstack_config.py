"""`[openstack]`: one line naming the bad setting, before anything starts.
(`vmha serve` with a password the real Keystone refuses is in
tests/e2e/test_openstack.py, `test_a_wrong_password_stops_serve_with_one_line`.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmha.adapters.cloud.openstack import OpenStackAuth, validate
from vmha.config import load_settings, masked
from vmha.controller.openstack import auth_of, build_openstack
from vmha.errors import ConfigError


def settings_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "vmha.toml"
    path.write_text('[cloud]\nadapter = "openstack"\n[openstack]\n' + body)
    return path


def test_the_adapter_needs_a_cloud_or_an_auth_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"openstack.cloud .* or openstack.auth_url"):
        load_settings(settings_file(tmp_path, ""))


def test_explicit_settings_need_user_project_and_password(tmp_path: Path) -> None:
    base = 'auth_url = "http://127.0.0.1:1/v3"\n'
    with pytest.raises(ConfigError, match=r"openstack\.username"):
        load_settings(settings_file(tmp_path, base))
    with pytest.raises(ConfigError, match=r"openstack\.project_name"):
        load_settings(settings_file(tmp_path, base + 'username = "vmha"\n'))
    missing = tmp_path / "nope.password"
    with pytest.raises(ConfigError, match=f"openstack.password_file: cannot read '{missing}'"):
        load_settings(settings_file(tmp_path, base + 'username = "vmha"\nproject_name = "s"\n'
                                    f'password_file = "{missing}"\n'))


def test_passwords_are_masked_in_config_show(tmp_path: Path) -> None:
    cfg = load_settings(settings_file(tmp_path, 'auth_url = "http://127.0.0.1:1/v3"\n'
                                      'username = "vmha"\nproject_name = "s"\n'
                                      'password = "hunter2-very-secret"\n'))
    shown = str(masked(cfg))
    assert "hunter2" not in shown and "'password': '***'" in shown


def test_an_unreachable_keystone_names_auth_url(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    cfg = load_settings(settings_file(tmp_path, 'auth_url = "http://127.0.0.1:1/v3"\n'
                                      'username = "vmha"\nproject_name = "s"\n'
                                      f'password_file = "{pw}"\ntimeout_s = 2\n'))
    with pytest.raises(ConfigError) as err:
        build_openstack(cfg.openstack)
    assert err.value.detail.startswith("openstack.auth_url = 'http://127.0.0.1:1/v3': "
                                       "cannot reach Keystone")
    assert "\n" not in err.value.detail


def test_an_unknown_clouds_yaml_entry_names_it(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  lab:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    cfg = load_settings(settings_file(tmp_path, 'cloud = "nope"\n'))
    with pytest.raises(ConfigError, match=r"^openstack.cloud = 'nope': "):
        build_openstack(cfg.openstack)


class RefusingSession:
    def get_token(self) -> str:
        from keystoneauth1 import exceptions as ks_exc

        raise ks_exc.Unauthorized("The request you have made requires authentication.")


class RefusedConn:
    session = RefusingSession()


def refused(auth: OpenStackAuth) -> str:
    with pytest.raises(ConfigError) as err:
        validate(RefusedConn(), auth)
    return err.value.detail


def test_a_refused_login_names_where_the_secret_came_from(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("not-the-password\n")
    base = 'auth_url = "http://k/v3"\nusername = "vmha"\nproject_name = "s"\n'
    from_file = load_settings(settings_file(tmp_path, base + f'password_file = "{pw}"\n'))
    assert refused(auth_of(from_file.openstack)) == (
        "openstack.password_file: Keystone refused the credentials of user 'vmha' (HTTP 401); "
        "check them")
    inline = load_settings(settings_file(tmp_path, base + 'password = "not-the-password"\n'))
    assert refused(auth_of(inline.openstack)).startswith("openstack.password: ")
    assert refused(OpenStackAuth(cloud="prod", password="x")).startswith(
        "openstack.cloud = 'prod': Keystone refused the credentials of that clouds.yaml entry")
    app = OpenStackAuth(auth_url="http://k/v3", application_credential_id="ac-1",
                        application_credential_secret="not-the-password",
                        secret_setting="application_credential_secret_file")
    assert refused(app).startswith("openstack.application_credential_secret_file: Keystone "
                                   "refused the credentials of application credential 'ac-1'")
    assert "not-the-password" not in refused(app) + refused(auth_of(inline.openstack))
