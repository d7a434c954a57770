"""A real 3-member etcd cluster (Debian's etcd-server) for the coordination
tests, started once per module on 127.0.0.1 (vmha.lab.etcd). The etcd tier
fails when etcd is not installed (scripts/ensure-etcd.sh installs it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiers import require_tier
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
