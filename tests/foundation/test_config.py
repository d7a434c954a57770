"""Configuration: TOML + environment, clear errors, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmha.config import load_settings, masked
from vmha.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vmha.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMHA_CONFIG", raising=False)
    settings = load_settings()
    assert settings.api.port == 8790
    assert settings.store.effective_url().startswith("sqlite:///")


def test_file_and_environment_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[api]\nlisten = "127.0.0.1:9000"\n[[api.tokens]]\ntoken = "t0p"\nrole = "admin"\n'
        '[store]\nurl = "sqlite:///x.db"\n',
    )
    monkeypatch.setenv("VMHA_STORE__URL", "postgresql+psycopg://db/vmha")
    settings = load_settings(path)
    assert settings.api.port == 9000
    assert settings.store.url == "postgresql+psycopg://db/vmha"
    assert settings.api.tokens[0].secret() == "t0p"


def test_vmha_config_env_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nlisten = "127.0.0.1:9001"\n')
    monkeypatch.setenv("VMHA_CONFIG", str(path))
    assert load_settings().api.port == 9001


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[api]\nlisten = "nowhere"\n', "api.listen = 'nowhere'"),
        ('[api]\nlistne = "127.0.0.1:1"\n', "api.listne"),
        ('[[api.tokens]]\ntoken = "x"\nrole = "root"\n', "project:<id>"),
        ('[[api.tokens]]\nrole = "admin"\n', "exactly one of token or token_file"),
        ('[store]\nurl = "mysql://x"\n', "store.url = 'mysql://x'"),
        ("[api\n", "not valid TOML"),
    ],
)
def test_bad_config_names_key_and_value(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert words in str(info.value)


def test_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[api.tokens]]\ntoken_file = "{tmp_path}/nope"\nrole = "viewer"\n')
    with pytest.raises(ConfigError, match="cannot read token_file"):
        load_settings(path)


def test_masked_hides_every_token(tmp_path: Path) -> None:
    secret_file = tmp_path / "tok"
    secret_file.write_text("from-file-secret\n")
    path = write(
        tmp_path,
        '[[api.tokens]]\ntoken = "inline-secret"\nrole = "admin"\n'
        f'[[api.tokens]]\ntoken_file = "{secret_file}"\nrole = "project:p1"\n',
    )
    shown = repr(masked(load_settings(path)))
    assert "inline-secret" not in shown and "from-file-secret" not in shown
    assert "***" in shown


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_masked_hides_the_database_password(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nurl = "postgresql+psycopg://vmha:hunter2@db/vmha"\n')
    shown = masked(load_settings(path))
    assert shown["store"]["url"] == "postgresql+psycopg://vmha:***@db/vmha"


def test_bmc_passwords_are_masked_and_checked(tmp_path: Path) -> None:
    pw = tmp_path / "bmc.pw"
    pw.write_text("file-bmc-secret\n")
    path = write(
        tmp_path,
        '[bmcs.host1]\nusername = "admin"\npassword = "inline-bmc-secret"\n'
        'ipmi_address = "127.0.0.1"\nipmi_port = 6231\n'
        f'[bmcs.host2]\nusername = "admin"\npassword_file = "{pw}"\n'
        'redfish_url = "https://127.0.0.1:8442"\n',
    )
    settings = load_settings(path)
    assert settings.bmcs["host2"].secret() == "file-bmc-secret"
    shown = repr(masked(settings))
    assert "inline-bmc-secret" not in shown and "file-bmc-secret" not in shown
    bad = write(tmp_path, '[bmcs.h]\nusername = "a"\n')
    with pytest.raises(ConfigError, match="exactly one of password or password_file"):
        load_settings(bad)


def test_a_bad_bmc_table_never_echoes_its_password(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[bmcs.host1]\nusername = "admin"\npassword = "do-not-print-me"\n'
        'password_file = "/etc/x"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "exactly one of password or password_file" in str(info.value)
    assert "do-not-print-me" not in str(info.value)


@pytest.mark.parametrize("text", [
    '[bmcs.h1]\nusername = "u"\npassword = "x"\npasswd = "SECRET-VALUE"\n',
    '[api]\ntokn = "SECRET-VALUE"\n',
    '[[api.tokens]]\ntoken = "t"\nrole = "admin"\ntokne = "SECRET-VALUE"\n',
    '[controller]\npasswd = "SECRET-VALUE"\n',
    '[store]\nurl = "mysql://vmha:SECRET-VALUE@db/vmha"\n',
    '[store]\nurl = "sqlite:///x"\npassword = "SECRET-VALUE"\n',
    '[events]\namqp_url = 5\nsecret = "SECRET-VALUE"\n',
    '[fencing]\nsecret_key_file = ["SECRET-VALUE"]\n',
])
def test_config_errors_never_echo_a_value_that_may_be_a_secret(tmp_path: Path,
                                                                text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert "SECRET-VALUE" not in str(info.value)
    assert "invalid configuration" in str(info.value)


def test_unknown_keys_are_named_without_their_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, '[bmcs.h1]\nusername = "u"\npassword = "x"\npasswd = "p"\n'))
    assert "bmcs.h1.passwd = (value not shown): unknown key" in str(info.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://vmha:p@ss@db/vmha", "postgresql+psycopg://vmha:***@db/vmha"),
    ("postgresql+psycopg://db/vmha?password=hunter2&sslmode=require",
     "postgresql+psycopg://db/vmha?password=***&sslmode=require"),
    ("postgresql+psycopg://vmha:a:b@db/vmha?sslpassword=x",
     "postgresql+psycopg://vmha:***@db/vmha?sslpassword=***"),
    ("sqlite:////var/lib/vmha/vmha.db", "sqlite:////var/lib/vmha/vmha.db"),
])
def test_masked_urls_hide_every_password(tmp_path: Path, url: str, shown: str) -> None:
    path = write(tmp_path, f'[store]\nurl = "{url}"\n')
    assert masked(load_settings(path))["store"]["url"] == shown


def test_an_unparsable_store_url_is_not_echoed() -> None:
    from vmha.adapters.store.engine import make_engine

    with pytest.raises(ConfigError) as info:
        make_engine("postgresql+psycopg://vmha:SECRET-VALUE@db:notaport/vmha")
    assert "SECRET-VALUE" not in str(info.value)
