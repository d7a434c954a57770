"""Three real `vmha serve` controllers on a 3-member etcd and PostgreSQL.

One leads (its engine runs, fenced with its store epoch); any controller
takes API calls (a follower forwards changes to the leader); a leader
paused past its lease (SIGSTOP) is replaced and, resumed, learns it no
longer leads; a killed leader is replaced within its lease and a round or
two. (bench/failover.py measures the takeover times.)
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
from ckit import LEASE_S, ControllerGroup, wait_for


def test_one_leader_any_controller_takes_calls_and_leaders_are_replaced(
        controllers: ControllerGroup) -> None:
    first = wait_for(controllers.leader, 30, "no controller leads")
    names = ["controller1", "controller2", "controller3"]

    def all_joined() -> list[Any] | None:
        # the first one may lead before the last one has joined the group
        got = [c.group() for c in controllers.controllers]
        joined = all(g is not None and [m["name"] for m in g["members"]] == names
                     for g in got)
        return got if joined else None

    groups = wait_for(all_joined, 30, "all three controllers members of the group")
    assert all(g["leader"] == first.name and g["healthy"] for g in groups)
    followers = [c for c in controllers.controllers if c is not first]
    assert all(g["epoch"] == 0 for g in groups if g["self"] != first.name)

    # a follower takes a change (forwarded to the leader); another one reads it
    made = followers[0].post("/v1/segments", {"name": "s1"})
    assert made.status_code == 201, made.text
    assert followers[1].get("/v1/segments/s1").status_code == 200
    epoch1 = first.group()["epoch"]

    # the leader paused past its lease: replaced; resumed, it steps down
    first.signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    second = wait_for(lambda: controllers.leader(followers), LEASE_S + 20,
                      "nobody took over from the paused leader")
    assert time.monotonic() - paused_at >= LEASE_S - 0.5
    epoch2 = second.group()["epoch"]
    assert epoch2 > epoch1
    first.signal(signal.SIGCONT)
    wait_for(lambda: (first.group() or {}).get("epoch") == 0, 20,
             "the resumed old leader still says it leads")
    assert (first.group() or {})["leader"] == second.name
    assert "no longer leads" in first.log.read_text()
    made = first.post("/v1/segments", {"name": "s2"})  # forwarded to the new leader
    assert made.status_code == 201, made.text

    # the leader killed: a remaining controller takes over (how fast:
    # bench/failover.py; a loaded machine may take longer than lease + rounds)
    second.signal(signal.SIGKILL)
    rest = [c for c in controllers.controllers if c is not second]
    third = wait_for(lambda: controllers.leader(rest), LEASE_S + 20, "no takeover after a kill")
    assert third.group()["epoch"] > epoch2
    for c in rest:
        wait_for(c.ready, 20, f"{c.name} not ready: "
                 f"{httpx.get(c.url + '/readyz', timeout=2).text}")
