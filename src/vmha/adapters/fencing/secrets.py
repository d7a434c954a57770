"""BMC passwords encrypted at rest: a Fernet box over the service's key.

The API encrypts a password when an admin stores a host's BMC
(`PUT /v1/hosts/{name}/bmc`), the controller's fencers decrypt it when they
log in (vmha.cli.fencers). The key comes from `[fencing] secret_key_file`
or the environment variable `VMHA_SECRET_KEY` (a Fernet key: 32 random
bytes, url-safe base64; make one with `vmha config secret-key`), read once
by the composition root. Neither the key nor a password is ever logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from vmha.errors import ConfigError

log = logging.getLogger("vmha.fencing.secrets")

KEY_ENV = "VMHA_SECRET_KEY"
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
            raise ConfigError(f"cannot decrypt the stored password of {what}: it was "
                              "encrypted with another key; store it again "
                              "(PUT /v1/hosts/{name}/bmc) or restore the old key") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_box(key_file: Path | None, env_key: str | None) -> SecretBox | None:
    """The box from `key_file` (wins) or the environment's key; None, with
    a warning naming the settings, when neither is given."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"fencing: cannot read secret_key_file {str(key_file)!r}: "
                              f"{exc.strerror}") from exc
        return SecretBox(key)
    if env_key:
        return SecretBox(env_key.strip())
    log.warning("BMC credentials cannot be stored through the API: %s", NO_KEY)
    return None
