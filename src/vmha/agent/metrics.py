"""The agent's own metrics in the Prometheus text format (`GET /v1/metrics`
on the agent's API, same bearer token). Written by hand: the format is a
few lines, and the agent stays small (no prometheus_client import).

Series: heartbeats sent and send errors, acks from the controller, peer
probes answered and replies received, datagrams rejected, domain events
and inventories reported (and failed), whether the agent is in contact,
whether a watchdog is armed and whether it is self-fencing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNTERS = {
    "heartbeats_sent": "Heartbeats sent (one per interval, to every controller address)",
    "send_errors": "Datagrams the kernel reported as not delivered (e.g. unreachable)",
    "acks": "Heartbeat acks received from a controller",
    "probes_answered": "Peer probes this agent answered",
    "probe_replies": "Replies received to this agent's peer probes",
    "rejected": "Datagrams dropped (bad signature, unknown kind)",
    "events_sent": "Domain events reported to the controller",
    "events_dropped": "Domain events dropped (queue full)",
    "failures": "Failed reports to the controller",
    "inventories_sent": "Domain inventories sent to the controller",
}


def render(host: str, counts: Mapping[str, int], health: Mapping[str, Any],
           watchdog_armed: bool) -> str:
    label = '{host="' + host.replace("\\", "\\\\").replace('"', '\\"') + '"}'
    lines: list[str] = []
    for key, help_text in COUNTERS.items():
        if key not in counts:
            continue
        name = f"vmha_agent_{key}_total"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter",
                  f"{name}{label} {counts[key]}"]
    gauges = {
        "in_contact": ("1 while the controller or most peers answer",
                       1 if health.get("in_contact") else 0),
        "watchdog_armed": ("1 while a watchdog device is armed and fed", 1 if watchdog_armed
                           else 0),
        "self_fencing": ("1 once the agent stopped feeding the watchdog to fence its host",
                         1 if health.get("self_fencing") else 0),
        "controller_silent_seconds": ("Seconds since the controller last answered",
                                      float(health.get("controller_silent_s", 0.0))),
    }
    for key, (help_text, value) in gauges.items():
        name = f"vmha_agent_{key}"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                  f"{name}{label} {value}"]
    return "\n".join(lines) + "\n"
