"""Heartbeat sharding with three real `vmha serve` on etcd and PostgreSQL.

24 agents (tests/scale/loadkit.py senders: real signed UDP heartbeats from
127.0.0.0/8) send every heartbeat to all three controllers. Each controller
owns a share on the hash ring of the group (`GET /v1/controllers`:
`owned_hosts`); a host of a follower's share that goes silent is reported
by that follower and made suspect by the leader with the follower's word in
the reason; a follower that stops hands its share to the others without a
host being suspected because of the switch.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ckit import ControllerGroup, wait_for

from tiers import require_tier
from vmha.adapters.store.testing import pg_admin_url, temporary_pg_database
from vmha.domain.errors import StoreUnavailable
from vmha.domain.ring import Ring
from vmha.lab.etcd import EtcdCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scale"))
from loadkit import Load, start_senders

LEASE_S = 2.0
NAMES = ["controller1", "controller2", "controller3"]
HOSTS = [f"shard{i:02d}" for i in range(24)]


@pytest.fixture
def controllers(etcd: EtcdCluster, tmp_path: Path) -> Iterator[ControllerGroup]:
    try:
        with temporary_pg_database(pg_admin_url()) as pg_url:
            group = ControllerGroup(tmp_path, f"{etcd.url}/shard-{tmp_path.name}", pg_url, 3,
                                    lease_s=LEASE_S)
            try:
                group.start()
                yield group
            finally:
                group.stop()
    except StoreUnavailable as exc:
        require_tier("postgres", f"no PostgreSQL (scripts/ensure-postgres.sh): {exc.detail}")


def suspected(controller: Any) -> list[dict[str, Any]]:
    answer = controller.get("/v1/events?limit=1000")
    answer.raise_for_status()
    return [e for e in answer.json()["items"] if e["type"] == "host.suspect"]


def test_each_controller_judges_its_share_and_the_leader_acts_on_their_reports(
        controllers: ControllerGroup) -> None:
    leader = wait_for(controllers.leader, 10, "no controller leads")
    wait_for(lambda: all((c.group() or {}).get("members") and
                         [m["name"] for m in c.group()["members"]] == NAMES
                         for c in controllers.controllers), 10, "all three joined")
    followers = [c for c in controllers.controllers if c is not leader]
    assert leader.post("/v1/segments", {"name": "s1"}).status_code == 201
    agents = [{"host": h, "segment": "s1", "address": "127.0.0.1", "version": "test"}
              for h in HOSTS]
    made = followers[0].post("/v1/agents/register-batch", {"agents": agents})
    assert made.status_code in (200, 201), made.text
    secrets = {a["host"]: a["secret"].encode() for a in made.json()["agents"]}

    ring = Ring(NAMES)
    owner, other = followers[0], followers[1]
    victim = next(h for h in HOSTS if ring.owner(h) == owner.name)
    start = time.time() + 0.5
    targets = [("127.0.0.1", c.hb_port) for c in controllers.controllers]
    senders = start_senders(Load(start_at=start, window=(start, start + 60), senders=2,
                                 silence_at=start + 20, silenced=frozenset({victim}),
                                 more_targets=tuple(targets[1:])), targets[0], secrets)
    try:
        expected = {n: len(h) for n, h in ring.shares(HOSTS).items()}
        assert all(n > 0 for n in expected.values())

        def shares() -> bool:
            group = leader.group() or {}
            return {m["name"]: m["owned_hosts"] for m in group.get("members", [])} == expected

        wait_for(shares, 15, f"the members' shares are not {expected}")

        (event,) = wait_for(lambda: suspected(leader), 45, f"{victim} never suspect")
        assert event["subject"] == victim
        assert f"{owner.name}, which watches it, reports it silent" in event["payload"]["reason"]
        assert f"host {victim} silent for" in owner.log.read_text()

        # a follower leaves: its share moves to the others, who heard those
        # hosts all along; nobody is suspected because of the switch
        other.signal(signal.SIGTERM)
        wait_for(lambda: [m["name"] for m in (leader.group() or {}).get("members", [])]
                 == sorted({leader.name, owner.name}), 30, f"{other.name} still a member")
        time.sleep(10)
        assert [e["subject"] for e in suspected(leader)] == [victim]
        moved = (leader.group() or {})["members"]
        assert sum(m["owned_hosts"] for m in moved) == len(HOSTS)
    finally:
        for proc, _ in senders:
            proc.terminate()
            proc.join(5)
