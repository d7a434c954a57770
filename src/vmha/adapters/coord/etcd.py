"""Controllers on an etcd v3 cluster: one lease per controller, a member
key and a leader key attached to it.

Why etcd3gw and not tooz: tooz (OpenStack's coordination library, whose
etcd3gw driver sits on this same client) offers groups and leader election,
but hides the lease and the revisions. vmha needs them: a leader must know
until when its authority certainly lasts (it stops acting before its lease
can have run out in etcd), and the leader key's create revision names the
term. With etcd3gw the whole protocol is three calls a round, all decided
by etcd (a lease keep-alive, one transaction, one range read); vmha
implements no consensus. etcd3gw talks to the gRPC gateway over HTTP (the
`/v3/` API of etcd 3.4 and later), is maintained within OpenStack, and has
no gRPC or C dependency.

Keys under the prefix (default `/vmha`):
- `members/<name>`: the controller's ControllerInfo as JSON, on its lease,
  put again in the round after its `report` (its verdicts on its share of
  the hosts, vmha.engine.shard) changed;
- `leader`: the leader's name, on the leader's lease, created only when
  absent (a transaction comparing its create revision with 0).

One round (`step`): keep the lease alive (grant a new one, and put the
member key again, when it ran out); put the member key again if its
report changed; stand for leader (or, abstaining, give the leader key up
if it names us: vmha.domain.handover); read the members.
`valid_until` is the monotonic time the keep-alive was *sent* plus the TTL
etcd granted: etcd cannot expire the lease before that, so a leader that
stops acting by then never overlaps the next one (which also fences it in
the store). A round that fails keeps the last view, with `healthy=False`,
and `leading` only until `valid_until`.

Endpoints are tried in order; a connection failure moves to the next one.
Errors: none raised from `step` (see the Coordinator port); `join` and
`resign` log and swallow connection failures (the lease ends by itself).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import requests

from vmha.domain.errors import ConfigError
from vmha.ports import ControllerInfo, CoordView

log = logging.getLogger("vmha.coord")
MIN_LEASE_S = 2  # etcd refuses shorter TTLs with its default election timeout
REQUEST_TIMEOUT_S = 1.0
DEFAULT_PREFIX = "/vmha"


def parse_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """`etcd://h1:p1,h2:p2/prefix` -> ([(h1, p1), (h2, p2)], '/prefix')."""
    rest = url.removeprefix("etcd://")
    hosts, slash, prefix = rest.partition("/")
    endpoints: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"coordination url {url!r}: {item!r} is not HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    prefix = "/" + prefix.strip("/") if slash and prefix.strip("/") else DEFAULT_PREFIX
    return endpoints, prefix


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _client_module() -> Any:
    """etcd3gw, imported on first use (it pulls in futurist and, through it,
    eventlet's deprecation warnings, which are not ours to show)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import etcd3gw

    return etcd3gw


class EtcdCoordinator:
    """The Coordinator port on etcd; see the module docstring."""

    def __init__(self, name: str, endpoints: Sequence[tuple[str, int]],
                 prefix: str = DEFAULT_PREFIX, lease_s: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not endpoints:
            raise ConfigError("coordination url: no etcd endpoint")
        self.name = name
        self.endpoints = list(endpoints)
        self.prefix = prefix.rstrip("/")
        self.ttl = max(MIN_LEASE_S, math.ceil(lease_s))
        self._now = monotonic
        self._info = ControllerInfo(name)
        self._put = ""  # the member record last put on the lease
        self._lease: int | None = None
        self._at = 0  # the endpoint in use
        self._clients: dict[int, Any] = {}
        self._view = CoordView(lease_s=float(self.ttl), healthy=False, error="not joined yet")
        self._abstain = False  # do not stand; give the leader key up (vmha.domain.handover)

    # -- plumbing --------------------------------------------------------------

    def _client(self) -> Any:
        client = self._clients.get(self._at)
        if client is None:
            host, port = self.endpoints[self._at]
            client = _client_module().client(host=host, port=port, timeout=REQUEST_TIMEOUT_S,
                                             api_path="/v3/")
            self._clients[self._at] = client
        return client

    def _call(self, what: Callable[[Any], Any]) -> Any:
        """`what(client)` on the endpoint in use, then on each other one."""
        errors = _client_module().exceptions
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            try:
                return what(self._client())
            except (errors.ConnectionFailedError, errors.ConnectionTimeoutError,
                    requests.RequestException) as exc:
                last = exc
                self._at = (self._at + 1) % len(self.endpoints)
        assert last is not None
        raise last

    def _key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # -- the protocol ----------------------------------------------------------

    def join(self, info: ControllerInfo) -> None:
        self._info = replace(info, report=self._info.report)

    def report(self, text: str) -> None:
        self._info = replace(self._info, report=text)

    def step(self) -> CoordView:
        sent = self._now()
        try:
            ttl = self._keep_lease()
            self._put_member()
            leader, revision = self._campaign()
            members = self._members()
        except Exception as exc:  # any failure is an unhealthy round, never a crash
            return self._failed(exc)
        leading = leader == self.name
        self._view = CoordView(
            members=members, leader=leader, leading=leading,
            valid_until=sent + ttl if leading else 0.0, healthy=True,
            lease_s=float(self.ttl), revision=revision if leader else 0)
        return self._view

    def _failed(self, exc: Exception) -> CoordView:
        error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        if self._view.healthy:
            log.warning("coordination: etcd unreachable (%s)", error)
        still = self._view.leading and self._now() < self._view.valid_until
        self._view = replace(self._view, healthy=False, error=error, leading=still,
                             valid_until=self._view.valid_until if still else 0.0)
        return self._view

    def _keep_lease(self) -> int:
        """Refresh the lease; grant a new one (and announce this controller
        on it) when there is none or it ran out. Returns the TTL granted."""
        if self._lease is not None:
            lease = self._lease
            answer = self._call(lambda c: c.post(c.get_url("/lease/keepalive"), json={"ID": lease}))
            ttl = int(answer.get("result", {}).get("TTL", -1))
            if ttl > 0:
                return ttl
            log.warning("coordination: lease of %s ran out; joining again", self.name)
            self._lease = None
        granted = self._call(lambda c: c.post(c.get_url("/lease/grant"),
                                              json={"TTL": self.ttl, "ID": 0}))
        self._lease = int(granted["ID"])
        self._put = ""
        self._put_member()
        return int(granted.get("TTL", self.ttl))

    def _put_member(self) -> None:
        """Put this controller's record on its lease, unless unchanged."""
        value = json.dumps(asdict(self._info))
        if value == self._put:
            return
        member = {"key": _b64(self._key("members", self.name)),
                  "value": _b64(value), "lease": self._lease}
        self._call(lambda c: c.post(c.get_url("/kv/put"), json=member))
        self._put = value

    def abstain(self, yes: bool) -> None:
        self._abstain = yes

    def _campaign(self) -> tuple[str | None, int]:
        """Create the leader key on our lease if absent (abstaining: delete
        it if it names us); return the leader and the create revision of
        its key."""
        key = _b64(self._key("leader"))
        if self._abstain:
            return self._give_up(key)
        txn = {
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE",
                         "create_revision": 0}],
            "success": [{"request_put": {"key": key, "value": _b64(self.name),
                                         "lease": self._lease}}],
            "failure": [{"request_range": {"key": key}}],
        }
        result = self._call(lambda c: c.transaction(txn))
        if result.get("succeeded"):
            revision = int(result["header"]["revision"])
            log.info("coordination: %s is the leader (etcd revision %d)", self.name, revision)
            return self.name, revision
        kvs = result["responses"][0]["response_range"].get("kvs", [])
        if not kvs:  # deleted between compare and read: nobody this round
            return None, 0
        leader = _unb64(kvs[0].get("value", ""))
        if leader == self.name and int(kvs[0].get("lease", 0)) != self._lease:
            return None, 0  # a key of an older lease of ours, about to go
        return leader, int(kvs[0]["create_revision"])

    def _give_up(self, key: str) -> tuple[str | None, int]:
        """Delete the leader key if it names us (one transaction); return
        the leader otherwise (None: nobody)."""
        txn = {
            "compare": [{"key": key, "result": "EQUAL", "target": "VALUE",
                         "value": _b64(self.name)}],
            "success": [{"request_delete_range": {"key": key}}],
            "failure": [{"request_range": {"key": key}}],
        }
        result = self._call(lambda c: c.transaction(txn))
        if result.get("succeeded"):
            log.info("coordination: %s gave the leader key up", self.name)
            return None, 0
        kvs = result["responses"][0]["response_range"].get("kvs", [])
        if not kvs:
            return None, 0
        return _unb64(kvs[0].get("value", "")), int(kvs[0]["create_revision"])

    def _members(self) -> tuple[ControllerInfo, ...]:
        rows = self._call(lambda c: c.get_prefix(self._key("members", "")))
        out: list[ControllerInfo] = []
        for value, _meta in rows:
            try:
                data = json.loads(value)
                out.append(ControllerInfo(str(data["name"]), str(data.get("api_url", "")),
                                          str(data.get("heartbeat", "")),
                                          str(data.get("report", ""))))
            except (ValueError, KeyError, TypeError):
                log.warning("coordination: unreadable member record %r", value[:100])
        return tuple(sorted(out, key=lambda m: m.name))

    def resign(self) -> None:
        lease, self._lease = self._lease, None
        self._put = ""
        self._view = CoordView(lease_s=float(self.ttl), healthy=self._view.healthy)
        if lease is None:
            return
        try:
            self._call(lambda c: c.post(c.get_url("/kv/lease/revoke"), json={"ID": lease}))
        except Exception as exc:
            log.warning("coordination: could not revoke the lease (%s); it ends in %d s",
                        exc, self.ttl)
