"""A real 3-member etcd cluster (Debian's etcd-server) for the coordination
tests, started once per module on 127.0.0.1 (vmha.lab.etcd), and three real
`vmha serve` on it and a PostgreSQL database of the test's own
(`controllers`, tests/coord/ckit.py; lease LEASE_S). The etcd tier fails
when etcd is not installed (scripts/ensure-etcd.sh installs it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ckit import LEASE_S, ControllerGroup

from tiers import require_tier
from vmha.adapters.store.testing import pg_admin_url, temporary_pg_database
from vmha.domain.errors import StoreUnavailable
from vmha.lab.etcd import EtcdCluster


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_tier("etcd", None if shutil.which("etcd") else
                 "etcd is not installed (scripts/ensure-etcd.sh installs Debian's etcd-server)")
    cluster = EtcdCluster(Path(tmp_path_factory.mktemp("etcd")), 3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def controllers(etcd: EtcdCluster, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[ControllerGroup]:
    """Three controllers under an etcd prefix of the test's own."""
    prefix = f"{request.module.__name__.rsplit('.', 1)[-1]}-{tmp_path.name}"
    try:
        with temporary_pg_database(pg_admin_url()) as pg_url:
            group = ControllerGroup(tmp_path, f"{etcd.url}/{prefix}", pg_url, 3,
                                    lease_s=LEASE_S)
            try:
                group.start()
                yield group
            finally:
                group.stop()
    except StoreUnavailable as exc:
        require_tier("postgres", f"no PostgreSQL (scripts/ensure-postgres.sh): {exc.detail}")
