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
from pathlib import Path
from typing import Any

from ckit import ControllerGroup, wait_for

from vmha.domain.ring import Ring

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scale"))
from loadkit import Load, start_senders

NAMES = ["controller1", "controller2", "controller3"]
HOSTS = [f"shard{i:02d}" for i in range(24)]


def suspected(controller: Any) -> list[dict[str, Any]]:
    answer = controller.get("/v1/events?limit=1000")
    answer.raise_for_status()
    return [e for e in answer.json()["items"] if e["type"] == "host.suspect"]


def test_each_controller_judges_its_share_and_the_leader_acts_on_their_reports(
        controllers: ControllerGroup) -> None:
    leader, secrets = controllers.with_agents(HOSTS)
    followers = [c for c in controllers.controllers if c is not leader]

    ring = Ring(NAMES)
    owner, other = followers[0], followers[1]
    victim = next(h for h in HOSTS if ring.owner(h) == owner.name)
    start = time.time() + 0.5
    targets = [("127.0.0.1", c.hb_port) for c in controllers.controllers]
    # (senders run until the finally below: every wait may take long on a busy machine)
    senders = start_senders(Load(start_at=start, window=(start, start + 600), senders=2,
                                 silence_at=start + 20, silenced=frozenset({victim}),
                                 more_targets=tuple(targets[1:])), targets[0], secrets)
    try:
        expected = {n: len(h) for n, h in ring.shares(HOSTS).items()}
        assert all(n > 0 for n in expected.values())

        def shares() -> bool:
            group = leader.group() or {}
            return {m["name"]: m["owned_hosts"] for m in group.get("members", [])} == expected

        wait_for(shares, 60, f"the members' shares are not {expected}")

        (event,) = wait_for(lambda: suspected(leader), 90, f"{victim} never suspect")
        assert event["subject"] == victim
        assert f"{owner.name}, which watches it, reports it silent" in event["payload"]["reason"]
        assert f"host {victim} silent for" in owner.log.read_text()

        # a follower leaves: its share moves to the others, who heard those
        # hosts all along; nobody is suspected because of the switch
        other.signal(signal.SIGTERM)
        wait_for(lambda: [m["name"] for m in (leader.group() or {}).get("members", [])]
                 == sorted({leader.name, owner.name}), 60, f"{other.name} still a member")
        time.sleep(10)
        assert [e["subject"] for e in suspected(leader)] == [victim]
        moved = (leader.group() or {})["members"]
        assert sum(m["owned_hosts"] for m in moved) == len(HOSTS)
    finally:
        for proc, _ in senders:
            proc.terminate()
            proc.join(5)
