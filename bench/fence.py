"""Time to a confirmed fence, per fencing method, against the lab emulators.

Starts one IPMI BMC emulator (`vmha.lab.bmc_ipmi`, pyghmi, UDP) and one
Redfish emulator (`vmha.lab.bmc_redfish`, sushy-tools, HTTPS with a
self-signed certificate) on 127.0.0.1, both backed by a power state file.
For each method, each run: power the host on (not timed), then time
`power_off` followed by `power_status` reads until one says OFF (the
engine's confirmation rule). Methods: ipmi (pyghmi), redfish (sushy),
fence_ipmilan --lanplus and fence_redfish --ssl-insecure (Debian
fence-agents, default options), and fence_ipmilan with power_wait=0
(the agent otherwise sleeps 2 s after the off before its own check).
Methods whose tools are missing are skipped and listed as such.

Writes bench/results/fence.json (median and max seconds per method).

    .venv/bin/python bench/fence.py [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import labrun  # bench/labrun.py (this script's folder is on sys.path)

from vmha.adapters.fencing.config import BmcEndpoint, static_lookup
from vmha.adapters.fencing.fence_agent import FenceAgentFencer
from vmha.adapters.fencing.ipmi import IpmiFencer
from vmha.adapters.fencing.redfish import RedfishFencer
from vmha.domain.model import Host
from vmha.ports import Fencer, PowerState

RESULTS = Path(__file__).parent / "results" / "fence.json"
USER = "benchadmin"
PASSWORD = "bench-Pw-7c1e"
HOST = Host(name="bench-host", segment="bench", bmc="bench-bmc")
CONFIRM_DEADLINE_S = 30.0


def free_port() -> int:
    """A port below 32768 (outside the ephemeral range) free for UDP and TCP."""
    while True:
        port = random.randrange(20000, 32768)
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port


@contextmanager
def emulator(module: str, args: list[str], ready: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 15
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def confirmed_fence(fencer: Fencer) -> float:
    await fencer.power_on(HOST)
    started = time.monotonic()
    await fencer.power_off(HOST)
    while await fencer.power_status(HOST) != PowerState.OFF:
        if time.monotonic() - started > CONFIRM_DEADLINE_S:
            raise RuntimeError(f"{fencer.method}: not confirmed off in {CONFIRM_DEADLINE_S} s")
    return time.monotonic() - started


def measure(fencer: Fencer, runs: int) -> dict[str, Any]:
    samples = [asyncio.run(confirmed_fence(fencer)) for _ in range(runs)]
    return {
        "runs": runs,
        "median_s": round(statistics.median(samples), 4),
        "max_s": round(max(samples), 4),
        "min_s": round(min(samples), 4),
        "samples_s": [round(s, 4) for s in samples],
    }


def fencers(ipmi: BmcEndpoint, redfish: BmcEndpoint, ca: str) -> dict[str, Fencer | None]:
    have_ipmilan = shutil.which("fence_ipmilan") and shutil.which("ipmitool")
    have_redfish_agent = shutil.which("fence_redfish")
    ipmi_lookup, redfish_lookup = (
        static_lookup({HOST.name: ipmi}),
        static_lookup({HOST.name: redfish}),
    )
    return {
        "ipmi": IpmiFencer(ipmi_lookup),
        "redfish": RedfishFencer(redfish_lookup, ca_bundle=ca),
        "fence_ipmilan": FenceAgentFencer("fence_ipmilan", ipmi_lookup, {"lanplus": "1"})
        if have_ipmilan
        else None,
        "fence_ipmilan power_wait=0": FenceAgentFencer(
            "fence_ipmilan", ipmi_lookup, {"lanplus": "1", "power_wait": "0"}
        )
        if have_ipmilan
        else None,
        "fence_redfish": FenceAgentFencer("fence_redfish", redfish_lookup, {"ssl-insecure": "1"})
        if have_redfish_agent
        else None,
    }


def run(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vmha-bench-fence-") as tmp:
        d = Path(tmp)
        (d / "pw").write_text(PASSWORD)
        ipmi_port, redfish_port = free_port(), free_port()
        common = ["--user", USER, "--password-file", str(d / "pw")]
        ipmi_args = ["--port", str(ipmi_port), *common, "--state-file", str(d / "power-ipmi")]
        redfish_args = [
            "--port",
            str(redfish_port),
            "--system",
            HOST.name,
            *common,
            "--state-file",
            str(d / "power-redfish"),
            "--cert",
            str(d / "cert.pem"),
            "--key",
            str(d / "key.pem"),
        ]
        with (
            emulator("vmha.lab.bmc_ipmi", ipmi_args, "listening", d / "ipmi.log"),
            emulator("vmha.lab.bmc_redfish", redfish_args, "listening", d / "redfish.log"),
        ):
            ipmi = BmcEndpoint("127.0.0.1", USER, PASSWORD, port=ipmi_port)
            redfish = BmcEndpoint(
                f"https://127.0.0.1:{redfish_port}",
                USER,
                PASSWORD,
                system=f"/redfish/v1/Systems/{HOST.name}",
            )
            methods: dict[str, Any] = {}
            for name, fencer in fencers(ipmi, redfish, str(d / "cert.pem")).items():
                methods[name] = measure(fencer, runs) if fencer else {"skipped": "not installed"}
                print(
                    f"{name}: {methods[name].get('median_s', '-')} s median, "
                    f"{methods[name].get('max_s', '-')} s max",
                    flush=True,
                )
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    start = labrun.machine()
    methods = run(max(args.runs, 1))
    measured = [m["median_s"] for m in methods.values() if "median_s" in m]
    report = {
        "benchmark": "time from power_off to a power_status read saying OFF",
        **start, "loadavg_1_5_15_at_end": labrun.machine()["loadavg_1_5_15"],
        "runs_per_method": args.runs,
        "emulators": "vmha.lab.bmc_ipmi (pyghmi) and vmha.lab.bmc_redfish (sushy-tools), 127.0.0.1",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "methods": methods,
        "fastest_median_s": min(measured) if measured else None,
        "goal_fastest_within_s": 2.0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
