"""The agent's own metrics in the Prometheus text format (`GET /v1/metrics`
on the agent's API, same bearer token). Written by hand: the format is a
few lines, and the agent stays small (no prometheus_client import).

Series: heartbeats sent and send errors, acks from the controller, peer
probes answered and replies received, datagrams rejected, domain events
and inventories reported (and failed), whether the agent is in contact,
whether a watchdog is armed and whether it is self-fencing. With
application probes on (`[probes] enabled` and a hypervisor), also the
prober's: checks by kind and result, guest-agent pings by result, the
state changes reported, and how many instances are watched, failed or
unresponsive now.

Labels stay bounded: `host` is the agent's own name, `kind` and `result`
come from fixed sets. There is no per-instance label on purpose: instances
move between hosts on every recovery, so a label per instance would leave a
trail of dead series on every host it ever ran on, and the number of guests
on a host is not bounded by anything vmha configures. Which instances are
failed is in the agent's `/v1/health` (`probes.app_failed`) and in the
controller's events; here an operator sees that something fails and alerts
on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vmha.agent.probes import ProbeCounts

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


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render(host: str, counts: Mapping[str, int], health: Mapping[str, Any],
           watchdog_armed: bool, probes: ProbeCounts | None = None,
           probe_health: Mapping[str, Any] | None = None) -> str:
    label = "{host=" + _quote(host) + "}"
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
    if probes is not None:
        lines += _probe_lines("host=" + _quote(host), probes, probe_health or {})
    return "\n".join(lines) + "\n"


def _probe_lines(host: str, counts: ProbeCounts, health: Mapping[str, Any]) -> list[str]:
    """The prober's series (vmha.agent.prober): `host` is the rendered label."""
    results = ("failed", "ok")  # ProbeCounts' index order
    name = "vmha_agent_app_probe_checks_total"
    lines = [f"# HELP {name} Application probe checks run, by kind (http, tcp, exec) and "
             "result (failures during a probe's initial_delay_s included)",
             f"# TYPE {name} counter"]
    lines += [f'{name}{{{host},kind="{kind.value}",result="{results[i]}"}} {n}'
              for kind, pair in counts.checks.items() for i, n in enumerate(pair)]
    name = "vmha_agent_guest_pings_total"
    lines += [f"# HELP {name} Guest-agent pings (guest-ping through the QEMU guest agent), "
              "by result", f"# TYPE {name} counter"]
    lines += [f'{name}{{{host},result="{results[i]}"}} {n}'
              for i, n in enumerate(counts.pings)]
    name = "vmha_agent_probe_reports_total"
    lines += [f"# HELP {name} State changes reported to the controller (app_failed, "
              "app_recovered, guest_unresponsive, guest_responsive)",
              f"# TYPE {name} counter"]
    lines += [f'{name}{{{host},kind="{kind}"}} {n}' for kind, n in counts.reports.items()]
    gauges = {
        "instances_watched": ("Instances whose probes or pings run on this host now",
                              int(health.get("watched", 0))),
        "instances_app_failed": ("Watched instances whose application is failed now",
                                 len(health.get("app_failed", ()))),
        "instances_guest_unresponsive": ("Watched instances whose guest agent is "
                                         "unresponsive now",
                                         len(health.get("guest_unresponsive", ()))),
    }
    for key, (help_text, value) in gauges.items():
        name = f"vmha_agent_{key}"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                  f"{name}{{{host}}} {value}"]
    return lines
