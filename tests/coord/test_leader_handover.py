"""A leader cut off from the hosts but not from etcd hands leadership to a
controller that hears them (vmha.domain.handover), with three real
`vmha serve` on etcd and PostgreSQL.

24 agents (tests/scale/loadkit.py senders: real signed UDP heartbeats from
127.0.0.0/8) send every heartbeat to all three controllers. The senders
stop sending to the leader's heartbeat port (its port made deaf, as a link
down to the hosts would; the test can undo it): after a hold-down it gives
its lease's leader key up, another controller leads, and no host is
suspected. It does not take leadership back when it hears again. When the
hosts then all go silent for every controller (really dead, as far as any
of them can tell), nobody hands over.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

from ckit import Controller, ControllerGroup, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scale"))
from loadkit import Load, start_senders

HOSTS = [f"deaf{i:02d}" for i in range(24)]
HANDS_OVER = "hands leadership over:"


def events(controller: Controller, prefix: str) -> list[dict[str, Any]]:
    answer = controller.get("/v1/events?limit=1000")
    answer.raise_for_status()
    return [e for e in answer.json()["items"] if e["type"].startswith(prefix)]


def leader_name(controllers: ControllerGroup) -> str | None:
    found = controllers.leader()
    return found.name if found is not None else None


def test_a_leader_that_hears_no_host_hands_over_to_one_that_does(
        controllers: ControllerGroup) -> None:
    old, secrets = controllers.with_agents(HOSTS)

    muted = mp.get_context("fork").Array("b", len(controllers.controllers), lock=False)
    start = time.time() + 0.5
    targets = [("127.0.0.1", c.hb_port) for c in controllers.controllers]
    senders = start_senders(Load(start_at=start, window=(start, start + 300), senders=2,
                                 more_targets=tuple(targets[1:]), muted=muted),
                            targets[0], secrets)
    try:
        # every follower reports hearing every host before the cut
        def all_heard() -> bool:
            group = old.group() or {}
            return len(group.get("members", [])) == 3 and all(
                m["silent_hosts"] == 0 for m in group["members"] if not m["leader"])

        wait_for(all_heard, 30, "the followers never reported their shares heard")
        time.sleep(10)  # the detectors' history
        assert events(old, "host.") == []

        muted[controllers.controllers.index(old)] = 1  # the leader hears no host any more
        cut = time.monotonic()
        new = wait_for(lambda: (name := leader_name(controllers)) not in (None, old.name)
                       and name, 60, f"{old.name} never handed leadership over")
        took = time.monotonic() - cut
        log = old.log.read_text()
        assert HANDS_OVER in log and "it hears 0 of 24 hosts while controller" in log, log[-3000:]
        assert took > 5.0, took  # the hold-down: not on the first tick without heartbeats
        time.sleep(10)  # it stays handed over; nothing suspected because of the switch
        assert leader_name(controllers) == new
        assert events(old, "host.") == [], events(old, "host.")
        # every controller's API tells how it hears a host, leader or not
        deaf_age = old.get(f"/v1/hosts/{HOSTS[0]}").json()["heartbeat_age_s"]
        assert deaf_age is not None and deaf_age > 5, deaf_age
        follower = next(c for c in controllers.controllers if c.name not in (old.name, new))
        heard_age = follower.get(f"/v1/hosts/{HOSTS[0]}").json()["heartbeat_age_s"]
        assert heard_age is not None and heard_age < 5, heard_age

        muted[controllers.controllers.index(old)] = 0  # it hears them again
        wait_for(lambda: "stands for leader again" in old.log.read_text(), 30,
                 f"{old.name} never stood again once it heard the hosts")
        time.sleep(5)
        assert leader_name(controllers) == new  # no flapping back
        assert events(old, "host.") == []

        # every host silent for every controller (really dead, as far as
        # anyone can tell): nobody else hears them, so nobody hands over
        for i in range(len(muted)):
            muted[i] = 1
        wait_for(lambda: events(old, "host.suspect"), 60, "the silent hosts never suspect")
        time.sleep(10)
        assert leader_name(controllers) == new
        for c in controllers.controllers:
            assert c.log.read_text().count(HANDS_OVER) == (c is old), c.name
    finally:
        for proc, _ in senders:
            proc.terminate()
            proc.join(5)
