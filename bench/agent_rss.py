"""Benchmark: the host agent's memory and CPU at 1 s heartbeats.

Starts a real agent (`python -m vmha.agent`) on 127.0.0.1 with two peers
(the second a silent address) and a real heartbeat receiver in this
process that acks every heartbeat, lets it run for `--duration` seconds
(default 60), samples VmRSS from /proc/PID/status and utime+stime from
/proc/PID/stat every second (no psutil), then writes JSON to
bench/results/agent.json. Goal: < 60 MiB RSS, < 1 % of one core.

Two runs: without a hypervisor (heartbeats and peer probes only) and with
libvirt's embedded driver open (`[hypervisor] uri =
"qemu:///embed?root=DIR"`, no domains; needs libvirt-python: the extra
`libvirt`). The JSON records the date, the commit and the machine's load.

Usage: .venv/bin/python bench/agent_rss.py [--duration 60] [--interval 1.0] [--no-libvirt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import labrun  # bench/labrun.py (this script's folder is on sys.path)

from vmha.adapters.heartbeat import start_receiver

RESULTS = Path(__file__).parent / "results" / "agent.json"
SECRET = "bench-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, interval: float, hb_port: int, libvirt: bool) -> Path:
    path = directory / "agent.toml"
    hypervisor = (f'[hypervisor]\nuri = "qemu:///embed?root={directory / "libvirt"}"\n'
                  if libvirt else "")
    path.write_text(
        f'host = "bench1"\nsegment = "bench"\nstate_dir = "{directory / "state"}"\n'
        f"heartbeat_interval_s = {interval}\n"
        f'secret = "{SECRET}"\nsegment_secret = "seg-{SECRET}"\n'
        f'[controller]\nheartbeat = ["127.0.0.1:{hb_port}"]\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\ntoken = "bench"\n'
        f'[peers]\nbench2 = "127.0.0.1:{free_port()}"\n'
        '[isolation]\ntimeout_s = 30\naction = "none"\n' + hypervisor
    )
    return path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def measure(duration: float, interval: float, libvirt: bool) -> dict[str, object]:
    hb_port = free_port()
    beats: list[int] = []
    transport, receiver = await start_receiver(
        lambda h: SECRET.encode() if h == "bench1" else None,
        lambda h, s, t: beats.append(s), "127.0.0.1", hb_port)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp), interval, hb_port, libvirt)
        proc = subprocess.Popen([sys.executable, "-m", "vmha.agent", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # imports and start-up (libvirt's first capability probe: ~4 s) are
            # not the steady state
            await asyncio.sleep(15.0 if libvirt else 3.0)
            hz = os.sysconf("SC_CLK_TCK")
            t0, c0 = time.monotonic(), cpu_ticks(proc.pid)
            samples = []
            while time.monotonic() - t0 < duration:
                await asyncio.sleep(1.0)
                samples.append(rss_kib(proc.pid))
            cpu_s = (cpu_ticks(proc.pid) - c0) / hz
            wall = time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait(10)
            transport.close()
    return {
        "hypervisor": "qemu:///embed (no domains)" if libvirt else "none",
        "heartbeat_interval_s": interval, "duration_s": round(wall, 1),
        "rss_mib_max": round(max(samples) / 1024, 1),
        "rss_mib_median": round(sorted(samples)[len(samples) // 2] / 1024, 1),
        "cpu_percent_of_core": round(100 * cpu_s / wall, 3),
        "heartbeats_received": len(beats), "receiver_metrics": receiver.metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--no-libvirt", action="store_true")
    args = parser.parse_args()
    start = labrun.machine()
    runs = [asyncio.run(measure(args.duration, args.interval, libvirt))
            for libvirt in ([False] if args.no_libvirt else [False, True])]
    result = {"benchmark": "agent_rss", **start,
              "loadavg_1_5_15_at_end": labrun.machine()["loadavg_1_5_15"],
              "settings": {"duration_s": args.duration, "interval_s": args.interval},
              "goal": {"rss_mib": 60, "cpu_percent_of_core": 1.0}, "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
