"""Coordination between controllers: group membership and leader election.

Two implementations of the `Coordinator` port (vmha.ports):
- `local` (vmha.adapters.coord.local): one controller, no service needed;
  it is always the only member and the leader (the embedded default with
  SQLite).
- `etcd` (vmha.adapters.coord.etcd): several controllers on an etcd v3
  cluster through its gRPC gateway (`etcd3gw`, OpenStack's client).

`build_coordinator(url, name, lease_s)` picks one from `[coordination] url`
(`local` or `etcd://host:port[,host:port...][/prefix]`). vmha implements no
consensus: etcd's leases and transactions decide.
"""

from __future__ import annotations

from vmha.adapters.coord.local import LocalCoordinator
from vmha.domain.errors import ConfigError
from vmha.ports import Coordinator


def build_coordinator(url: str, name: str, lease_s: float) -> Coordinator:
    """The coordinator that `url` names; ConfigError for anything else."""
    if url in ("", "local"):
        return LocalCoordinator(name, lease_s)
    if url.startswith("etcd://"):
        from vmha.adapters.coord.etcd import EtcdCoordinator, parse_url

        endpoints, prefix = parse_url(url)
        return EtcdCoordinator(name, endpoints, prefix, lease_s)
    raise ConfigError(f"coordination url {url!r}: use 'local' or "
                      "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")


__all__ = ["LocalCoordinator", "build_coordinator"]
