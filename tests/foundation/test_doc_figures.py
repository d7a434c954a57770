"""Figures in the docs come from saved benchmark results (issue 11 item 16).

Each check below builds, from a bench/results/*.json file, the sentence
fragment the docs must quote; a rerun that moves a figure fails here until
the docs say the new one. Cheap: no benchmark runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def results(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "bench" / "results" / name).read_text())
    return data


def doc(name: str) -> str:
    return " ".join((ROOT / "docs" / name).read_text().split())  # line breaks as spaces


def dur(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fence_phrases() -> list[str]:
    methods = results("fence.json")["methods"]
    return [f"{name} median {dur(m['median_s'])} (max {dur(m['max_s'])})"
            for name, m in methods.items() if "median_s" in m]


def notify_phrases() -> list[str]:
    data = results("notify_latency.json")
    cases = {(c["rate_per_s"], c["down"]): c for c in data["cases"]}
    hook100, sse100 = cases[(100.0, 0)]["webhook"], cases[(100.0, 0)]["sse"]
    out = [f"p50 ≈ {hook100['p50_ms']:.0f} ms, p99 ≈ {hook100['p99_ms']:.0f} ms, "
           f"max ≈ {hook100['max_ms']:.0f} ms at 100 events/s",
           f"SSE p99 ≈ {sse100['p99_ms']:.0f} ms"]
    if (1000.0, 0) in cases:
        full, one_down = cases[(1000.0, 0)]["webhook"], cases[(1000.0, 1)]["webhook"]
        out.append(f"webhook p99 ≈ {dur(full['p99_ms'] / 1000)} "
                   f"({dur(one_down['p99_ms'] / 1000)} with one subscriber down)")
    return out


def agent_phrases() -> list[str]:
    data = results("agent.json")
    runs = data.get("runs", [data])
    return [f"{r['rss_mib_median']:.0f} MiB RSS and {r['cpu_percent_of_core']:.2f} % of a core"
            for r in runs]


def detect_phrases() -> list[str]:
    out = []
    for r in results("detect_lab.json")["results"]:
        rows = [r, r["cold"], r["after_restart"]]
        cells = " | ".join(f"{x['median_s']:.2f} / {x['max_s']:.2f} s" for x in rows)
        out.append(f"| {r['interval_s']:g} s | {cells} | "
                   f"{r['transient_suspects']} / {r['false_failed']} |")
    return out


def app_probe_phrases() -> list[str]:
    """bench/app_probe.py: recovery times (app_probe.json) and the agent's
    probe cost, before (app_probe.json) and after (app_probe_cost.json, and
    app_probe_cost_local.json against a local server) the probes ran as
    socket callbacks on one timer wheel."""
    data = results("app_probe.json")
    out = []
    for kind, label in (("exec", "exec (in-guest restart)"), ("reset", "reset")):
        s = data[kind]["summary"]
        cells = " | ".join(f"{s[k]['median']:.2f} / {s[k]['max']:.2f} s"
                           for k in ("detect_s", "step_to_answer_s", "total_s"))
        out.append(f"| {label} | {cells} |")
    for name in ("app_probe.json", "app_probe_cost.json"):
        cost = results(name)["agent_cost"]
        out.append(f"{cost['baseline_4_probes']['cpu_percent_of_one_core']:.2f} % of one core "
                   f"with 4 probes, {cost['with_50_probes_at_1s']['cpu_percent_of_one_core']:.2f}"
                   " % with 50")
    for name in ("app_probe_cost.json", "app_probe_cost_local.json"):
        base, full = (results(name)["agent_cost"][k]
                      for k in ("baseline_4_probes", "with_50_probes_at_1s"))
        out.append(f"| `{name}` | {base['cpu_percent_of_one_core']:.2f} % | "
                   f"{full['cpu_percent_of_one_core']:.2f} % ({full['user_percent']:.2f} + "
                   f"{full['system_percent']:.2f}) | {full['app_failed_events']} |")
    return out


def group_scale_phrases() -> list[str]:
    """bench/controller_scale.py --controllers 3 (issue 15)."""
    runs = {(r["label"], r["hosts"]): r for r in results("controller_scale.json")["runs"]}
    out = []
    for send in ("all", "owner"):
        for hosts in (6000, 30000):
            r = runs.get((f"3-controllers-{send}", hosts))
            if r is None:
                continue
            cpu = ", ".join(f"{c['cpu_window_pct']:.1f}" for c in r["controllers"].values()
                            if not c["leader"])
            out.append(cpu)
            if send == "all" and r["detection"]["detected"]:
                d = r["detection"]
                out.append(f"{d['detected']} of {d['silenced']}, {d['median_s']:.2f} / "
                           f"{d['max_s']:.2f} s")
    return out


def mass_silence_phrases() -> list[str]:
    runs = {r["label"]: r for r in results("mass_silence.json")["runs"] if r["hosts"] == 10000}
    before, after = runs["before"], runs["after"]
    return [f"held {before['held_total_s']:.2f} s in total before",
            f"longest {before['max_hold_s']:.2f} s, p99 {before['p99_hold_s']:.2f} s",
            f"and {after['held_total_s']:.2f} s after",
            f"longest {after['max_hold_s']:.2f} s, p99 {after['p99_hold_s']:.2f} s",
            f"suspect in the store after {after['all_silenced_suspect_in_store_after_s']} s"]


def mutants_phrases() -> list[str]:
    """bench/mutants.py (issue 11 item 14): per mutation, the seeds whose
    property test failed, the first invariant it broke, failing scenarios."""
    data = results("mutants.json")
    n = len(data["seeds"])
    out = [f"seeds {', '.join(map(str, data['seeds']))}; src of commit {data['src_commit']}"]
    for m in data["mutants"]:
        p, s = m["property"], m["scenarios"]
        caught = f"{len(p['seeds_failed'])} of {n}"
        fails = [f for r in p["runs"] for f in r["failures"]]
        first = re.search(r"INVARIANT (\w+)", fails[0]["first"]) if fails else None
        why = (f"`{first.group(1)}`" if first else f"`{fails[0]['test']}`" if fails
               else "none")
        out.append(f"| `{m['name']}` | {caught} | {why} | {s['failed']} of {s['tests']} |")
    return out


@pytest.mark.parametrize(("page", "phrases"), [
    ("controllers.md", group_scale_phrases),
    ("fencing.md", fence_phrases), ("events.md", notify_phrases), ("agent.md", agent_phrases),
    ("development.md", detect_phrases), ("development.md", app_probe_phrases),
    ("development.md", mass_silence_phrases), ("development.md", mutants_phrases),
])
def test_docs_quote_the_saved_results(page: str, phrases: Any) -> None:
    text = doc(page)
    missing = [p for p in phrases() if p not in text]
    assert not missing, f"docs/{page} does not quote the saved figures: {missing}"
