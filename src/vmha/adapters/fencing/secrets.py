"""Secrets encrypted at rest: a Fernet box over the service's key.

The API encrypts a BMC password when an admin stores a host's BMC
(`PUT /v1/hosts/{name}/bmc`), the controller's fencers decrypt it when they
log in (vmha.controller.fencers); the SQL store seals agent secrets, webhook
secrets and decision tokens with the same box (vmha.adapters.store.sealing).
The key comes from `[fencing] secret_key_file` or the environment variable
`VMHA_SECRET_KEY` (a Fernet key: 32 random bytes, url-safe base64; make one
with `vmha config secret-key`); with neither, `vmha serve` uses a key file
it generates once (mode 0600) beside its SQLite database, or in
`store.data_dir` (see `load_box`). Read once by the composition root.
Neither the key nor a secret is ever logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from vmha.errors import ConfigError

log = logging.getLogger("vmha.fencing.secrets")

KEY_ENV = "VMHA_SECRET_KEY"
KEY_FILE = "secret.key"  # the generated key's name, beside the database or in data_dir
NO_KEY = (f"no secret key to encrypt BMC passwords: set [fencing] secret_key_file or the "
          f"environment variable {KEY_ENV} (a Fernet key, e.g. from `vmha config "
          f"secret-key`) and restart the controller")


class SecretBox:
    """Encrypts and decrypts short secrets with one Fernet key."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError) as exc:
            raise ConfigError("the BMC secret key is not a Fernet key (32 url-safe base64 "
                              "bytes); make one with `vmha config secret-key`") from exc

    def __repr__(self) -> str:
        return "SecretBox(***)"

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str, what: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise ConfigError(f"cannot decrypt {what}: it was encrypted with another key; "
                              "restore that key, or store the secret again") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_box(key_file: Path | None, env_key: str | None,
             generated: Path | None = None) -> SecretBox | None:
    """The box from `key_file` (wins) or the environment's key; else from
    the `generated` key file (made at first use, mode 0600); None, with a
    warning naming the settings, when none of them is given."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"fencing: cannot read secret_key_file {str(key_file)!r}: "
                              f"{exc.strerror}") from exc
        return SecretBox(key)
    if env_key:
        return SecretBox(env_key.strip())
    if generated is not None:
        return SecretBox(_generated_key(generated))
    log.warning("BMC credentials cannot be stored through the API: %s", NO_KEY)
    return None


def _generated_key(path: Path) -> str:
    """The key in `path`, written there first (0600) when it does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret key {str(path)!r}: {exc.strerror}") from exc
        if path.stat().st_mode & 0o077:
            log.warning("secret key %s is readable by other users: chmod 600 it", path)
        return key
    except OSError as exc:
        raise ConfigError(f"cannot create the secret key {str(path)!r}: {exc.strerror}; set "
                          f"[fencing] secret_key_file or {KEY_ENV}") from exc
    key = generate_key()
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    log.warning("generated the secret key %s (mode 0600): it encrypts the BMC passwords, "
                "webhook secrets, agent secrets and decision tokens in the store; back it "
                "up with the database ([fencing] secret_key_file sets another)", path)
    return key
