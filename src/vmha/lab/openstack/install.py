"""The OpenStack services' own Python environment, outside the repository.

Keystone, Nova, Placement, Glance, Ceilometer and Aodh come from PyPI at
pinned versions into a venv of their own (never vmha's: their dependency
pins would fight ours), under `/var/lib/vmha/openstack/venv-<key>` for
root. The key hashes the pins and the Python version, so a changed pin
builds a new venv and an unchanged one is reused across labs and test runs
(the first install takes ~3 minutes, a reuse nothing). A venv counts only
once its `.complete` stamp exists: an install cut short is redone.

`python -m vmha.lab.openstack.install [--json]` ensures it (called by
`scripts/ensure-openstack.sh` and by `vmha lab up --cloud openstack`).
Standard library only; runs pip in a subprocess.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vmha.config import default_data_dir
from vmha.errors import ConfigError

# What the lab runs (LAB-NOTES: Nova 34 = 2026.2, top compute microversion 2.104).
PINS = (
    "keystone==30.0.0",
    "nova==34.0.0",
    "openstack-placement==16.0.0",
    "glance==33.0.0",
    "ceilometer==27.0.0",
    "aodh==23.0.0",
    "gunicorn==27.0.1",
    "PyMySQL==1.2.4",
)
STAMP = ".complete"
INSTALL_TIMEOUT_S = 1800.0


def openstack_root() -> Path:
    """Where the venvs and the bootstrap cache live (kept between labs)."""
    return default_data_dir() / "openstack"


def venv_key() -> str:
    text = "\n".join((*PINS, f"python{sys.version_info.major}.{sys.version_info.minor}"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def venv_dir(root: Path | None = None) -> Path:
    return (root or openstack_root()) / f"venv-{venv_key()}"


def ready(root: Path | None = None) -> bool:
    return (venv_dir(root) / STAMP).is_file()


def ensure_venv(root: Path | None = None, log: Path | None = None) -> tuple[Path, bool]:
    """The venv's directory, installing it first when needed; and whether
    it was installed now. ConfigError (one line, naming the log) on failure."""
    venv = venv_dir(root)
    if (venv / STAMP).is_file():
        return venv, False
    venv.parent.mkdir(parents=True, exist_ok=True)
    if venv.exists():
        shutil.rmtree(venv)  # a half-made one: start again
    log = log or venv.parent / f"install-{venv_key()}.log"
    started = time.monotonic()
    with log.open("w") as out:
        for cmd in ([sys.executable, "-m", "venv", str(venv)],
                    [str(venv / "bin" / "pip"), "install", "--quiet",
                     "--disable-pip-version-check", *PINS]):
            try:
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=INSTALL_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(f"installing the OpenStack services failed ({exc}); "
                                  f"see {log}") from exc
            if done.returncode != 0:
                raise ConfigError(f"installing the OpenStack services failed (pip exit "
                                  f"{done.returncode}); see {log}")
    (venv / STAMP).write_text(json.dumps(
        {"pins": PINS, "seconds": round(time.monotonic() - started, 1)}))
    return venv, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmha.lab.openstack.install")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        venv, installed = ensure_venv()
    except ConfigError as exc:
        print(f"ensure-openstack: {exc.detail}", file=sys.stderr)
        return 2
    took = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps({"venv": str(venv), "installed": installed, "seconds": took}))
    else:
        verb = f"installed in {took} s" if installed else "present"
        print(f"ensure-openstack: OpenStack services venv {verb}: {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
