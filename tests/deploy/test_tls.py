"""`[api] tls_cert_file`/`tls_key_file`: `vmha serve` speaks HTTPS itself."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydantic
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from deploykit import free_port

from vmha.config import Settings


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "api.crt", directory / "api.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_serve_over_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    config = tmp_path / "vmha.toml"
    config.write_text(f'[api]\nlisten = "127.0.0.1:{port}"\ntls_cert_file = "{cert}"\n'
                      f'tls_key_file = "{key}"\n[store]\nurl = "sqlite:///{tmp_path}/v.db"\n'
                      '[heartbeat]\nenabled = false\n')
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from vmha.cli.main import main; main()",
                                 "serve", "--config", str(config)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        trust = ssl.create_default_context(cafile=str(cert))
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/readyz", verify=trust, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
        assert r.status_code == 200
        assert f"API https://127.0.0.1:{port}/v1" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(20)


def test_tls_needs_both_files() -> None:
    with pytest.raises(pydantic.ValidationError, match="tls_key_file"):
        Settings.model_validate({"api": {"tls_cert_file": "/x.crt"}})


def test_config_secret_key_makes_a_fernet_key() -> None:
    from cryptography.fernet import Fernet
    from typer.testing import CliRunner

    from vmha.cli.main import app

    out = CliRunner().invoke(app, ["config", "secret-key"])
    assert out.exit_code == 0
    box = Fernet(out.output.strip().encode())  # a valid key
    assert box.decrypt(box.encrypt(b"pw")) == b"pw"
