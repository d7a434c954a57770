"""Test tiers that need a service or a privilege: they run, or they fail.

`make test` installs and starts what every tier needs, so a tier that cannot
run is a broken set-up, never a reason to pass quietly. A developer who does
not want a tier says so explicitly: `VMHA_TEST_SKIP=postgres,lab` (or `all`).
The tiers opted out are listed at the end of the run.

Tiers: postgres, etcd (Debian's etcd-server, a 3-member cluster per module), amqp,
lab (namespaces, root), hypervisor (embedded libvirt),
guest-image (QEMU guests), fence-agents, chromium (the dashboard in Debian's
chromium), systemd (systemd-analyze), promtool (alert rules), openstack (the lab
cloud: its venv, MariaDB, RabbitMQ).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SKIP_ENV = "VMHA_TEST_SKIP"
opted_out: dict[str, str] = {}  # tier -> why it could not run (for the summary)


def skipped_tiers() -> set[str]:
    return {t.strip() for t in os.environ.get(SKIP_ENV, "").split(",") if t.strip()}


def require_tier(tier: str, missing: str | None) -> None:
    """Nothing when `missing` is empty; else skip when the tier is opted out,
    and fail otherwise (naming the fix and the opt-out)."""
    if not missing:
        return
    wanted = skipped_tiers()
    if tier in wanted or "all" in wanted:
        opted_out.setdefault(tier, missing)
        pytest.skip(f"{tier} tier opted out ({SKIP_ENV}): {missing}")
    pytest.fail(f"the {tier} tier cannot run: {missing}. `make test` installs and starts "
                f"what it needs; to leave it out on purpose set {SKIP_ENV}={tier}",
                pytrace=False)


def promtool() -> str:
    """Prometheus' promtool: on PATH, or where scripts/ensure-ops-deps.sh puts it."""
    bundled = Path(__file__).parents[1] / "build" / "tools" / "promtool"
    found = shutil.which("promtool") or (str(bundled) if bundled.exists() else None)
    require_tier("promtool", None if found else
                 "promtool is missing (scripts/ensure-ops-deps.sh puts it in build/tools/)")
    assert found is not None
    return found
