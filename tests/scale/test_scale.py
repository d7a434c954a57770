"""Two thousand hosts against a real `vmha serve` (issue 18).

Real signed UDP heartbeats at 1 s from two sender processes on their own
127.0.0.0/8 addresses (tests/scale/loadkit.py, shared with
bench/controller_scale.py), agents registered through the bulk API, and a
client listing every host page after page for the whole 20 s measured
window: no host may turn suspect except the two that stop sending, and
those two must be. Then SIGTERM, as the senders end (2,000 hosts just
gone quiet): the controller must exit within SIGTERM_EXIT_S (a bound that
catches a hang, not a speed goal: the benchmark measures 1-2 s). Figures
(accepted heartbeats, drops, page times, the exit) are printed, not
asserted: speed goals live in the benchmark.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from loadkit import Lister, Load, Serve, register, start_senders

HOSTS = 2000
WARMUP_S, MEASURED_S = 10.0, 20.0
SIGTERM_EXIT_S = 15.0  # issue 18: "still answers SIGTERM promptly"


def suspicions(db: Path) -> list[tuple[str, float]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(
            "SELECT subject, time FROM events WHERE type = 'host.suspect' ORDER BY id"))


def test_two_thousand_hosts_none_looks_dead_while_hosts_are_listed(tmp_path: Path) -> None:
    serve = Serve(tmp_path)
    serve.start()
    names = [f"h{i:05d}" for i in range(HOSTS)]
    silenced = frozenset({"h00100", "h01100"})
    try:
        secrets, registration = register(serve, names)
        t0 = time.time() + 1.0
        w0, w1 = t0 + WARMUP_S, t0 + WARMUP_S + MEASURED_S
        load = Load(t0, (w0, w1), senders=2, silence_at=w0 + 8.0, silenced=silenced)
        senders = start_senders(load, ("127.0.0.1", serve.hb_port), secrets)
        lister = Lister(serve, 1000, w0, MEASURED_S)
        lister.thread.start()
        reports = [reader.recv() for _, reader in senders]
        lister.thread.join(120)
        assert not lister.thread.is_alive(), "a page of hosts never came"
        with serve.client() as client:
            status = client.get("/v1/controller").json()
    finally:
        exit_s = serve.stop()
    last_sent = {h: t for r in reports for h, t in r["last_sent"].items()}
    suspect = suspicions(serve.db)
    print(f"registration {registration}; heartbeats sent {sum(r['sent'] for r in reports)}; "
          f"{len(lister.pages)} pages, slowest {max(p[1] for p in lister.pages):.2f} s; "
          f"suspect: {len(suspect)}, first {suspect[:3]}; controller {status}; "
          f"SIGTERM to exit {exit_s} s")
    assert exit_s is not None and exit_s < SIGTERM_EXIT_S, \
        f"vmha serve took {exit_s} s to exit on SIGTERM (None: killed after 60 s)"
    assert {h for h, _ in suspect} == silenced, "a live host was made suspect"
    assert all(t > last_sent[h] for h, t in suspect)
    assert lister.walks and all(walk == names for walk in lister.walks)
    assert {p[2] for p in lister.pages} == {200} and not lister.errors
    assert sum(r["send_errors"] for r in reports) == 0
    counts = status["heartbeats"]
    assert {k: counts[k] for k in ("bad_signature", "replayed", "unknown_host", "malformed")} \
        == dict.fromkeys(("bad_signature", "replayed", "unknown_host", "malformed"), 0)
    assert counts["accepted"] > 0 and counts["acks_sent"] == counts["accepted"]
