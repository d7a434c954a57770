"""A Redfish BMC emulator for one lab host: sushy-tools' emulator app with a
systems driver backed by a `vmha.lab.power.PowerBackend`, over HTTPS with
a self-signed certificate and HTTP basic authentication.

Started by tests, benchmarks and (later) the lab as
`python -m vmha.lab.bmc_redfish --port P --system NAME --user U
--password-file F --cert C --key K (--state-file S | --off-cmd CMD
--on-cmd CMD [--status-cmd CMD])`; it listens on TCP 127.0.0.1:P
(`--address` to change) until killed. When the files `--cert`/`--key` do
not exist it writes a fresh self-signed pair there (valid for 127.0.0.1,
localhost and the address), which clients can use as their CA bundle.

The system is `/redfish/v1/Systems/NAME`. Power changes apply at once
(sushy-tools' fake driver delays them 1-11 s). It must not log passwords;
the password lives only in a bcrypt digest file (sushy-tools' format).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import ipaddress
import logging
import os
import signal
import ssl
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sushy_tools import error as sushy_error
from sushy_tools.emulator import main as sushy_main
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver
from werkzeug.serving import make_server

from vmha.lab.power import PowerBackend, add_power_arguments, backend_from_args

log = logging.getLogger("vmha.lab.bmc_redfish")

_ON = ("On", "ForceOn")
_OFF = ("ForceOff", "GracefulShutdown")
_CYCLE = ("ForceRestart", "GracefulRestart", "PowerCycle")


class PowerSystemsDriver(AbstractSystemsDriver):  # type: ignore[misc]
    """One Redfish ComputerSystem named `name`, powered by `power`."""

    def __init__(self, name: str, power: PowerBackend) -> None:
        self._name = name
        self._uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.vmha-lab"))
        self._power = power
        self._boot_device = "Hdd"
        self._lock = threading.Lock()

    @property
    def driver(self) -> str:
        return "<vmha power backend>"

    @property
    def systems(self) -> list[str]:
        return [self._name]

    def _check(self, identity: str) -> None:
        if identity not in (self._name, self._uuid):
            raise sushy_error.NotFound(f"system {identity} was not found")

    def uuid(self, identity: str) -> str:
        self._check(identity)
        return self._uuid

    def name(self, identity: str) -> str:
        self._check(identity)
        return self._name

    def get_power_state(self, identity: str) -> str:
        self._check(identity)
        with self._lock:
            return "On" if self._power.power_state() else "Off"

    def set_power_state(self, identity: str, state: str) -> None:
        self._check(identity)
        with self._lock:
            if state in _ON:
                self._power.power_on()
            elif state in _OFF:
                self._power.power_off()
            elif state in _CYCLE:
                self._power.power_off()
                self._power.power_on()
            else:
                raise sushy_error.NotSupportedError(f"power state {state} is not supported")
        log.info("system %s: reset %s", self._name, state)

    def get_boot_device(self, identity: str) -> str:
        self._check(identity)
        return self._boot_device

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        self._check(identity)
        self._boot_device = boot_source


class _VmhaApplication(sushy_main.Application):  # type: ignore[misc]
    """sushy-tools' app, with our driver instead of libvirt/nova/fake."""

    @property
    def systems(self) -> PowerSystemsDriver:
        driver: PowerSystemsDriver = self.config["VMHA_SYSTEMS_DRIVER"]
        return driver


def write_self_signed(cert: Path, key: Path, address: str) -> None:
    """A self-signed certificate (its own CA) for `address` and localhost."""
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmha-lab-bmc")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for ip in {"127.0.0.1", address}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            names.append(x509.DNSName(ip))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key, 0o600)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _auth_file(user: str, password: str) -> Path:
    """A bcrypt htpasswd file for sushy-tools, removed at exit."""
    fd, name = tempfile.mkstemp(prefix="vmha-redfish-auth-")
    digest = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=4))
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{user}:{digest.decode('ascii')}\n")
    atexit.register(lambda: Path(name).unlink(missing_ok=True))
    return Path(name)


def build_app(system: str, power: PowerBackend, user: str, password: str) -> Any:
    """sushy-tools' Flask app serving `system`, behind basic auth."""
    app = sushy_main.app
    app.__class__ = _VmhaApplication
    app.config["VMHA_SYSTEMS_DRIVER"] = PowerSystemsDriver(system, power)
    app.configure(extra_config={"SUSHY_EMULATOR_AUTH_FILE": str(_auth_file(user, password))})
    return app


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vmha.lab.bmc_redfish", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--system", required=True, help="system id (the lab host's name)")
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--cert", required=True, help="PEM certificate (created if missing)")
    p.add_argument("--key", required=True, help="PEM private key (created if missing)")
    add_power_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s bmc_redfish: %(message)s"
    )
    # werkzeug logs every request line; the lab only needs ours.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    cert, key = Path(args.cert), Path(args.key)
    if not (cert.exists() and key.exists()):
        write_self_signed(cert, key, args.address)
    password = Path(args.password_file).read_text(encoding="utf-8").strip()
    app = build_app(args.system, backend_from_args(args, "bmc_redfish"), args.user, password)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = make_server(args.address, args.port, app, threaded=True, ssl_context=context)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("listening on https://%s:%d for user %s", args.address, args.port, args.user)
    server.serve_forever()


if __name__ == "__main__":
    main()
