"""Lab fixtures: a running lab (always torn down) and a real heartbeat
receiver on 198.18.0.1:8791 in the root namespace, run in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import Recorder, Recording

from vmha.lab import faults, state
from vmha.lab import lab as lab_ops


@pytest.fixture(scope="module")
def receiver_factory() -> Iterator[Any]:
    """Start a recording receiver for a lab's secrets; stopped at the end."""
    stops: list[Any] = []

    def start(lab_dir: Path, port: int = 8791) -> Recorder:
        st = state.load(lab_dir)
        secrets = {n: h["secret"].encode() for n, h in st["hosts"].items()}
        rec = Recorder()
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def bind() -> None:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: Recording(rec, secrets), local_addr=("198.18.0.1", port))
            rec.protocol = proto
            stops.append((loop, transport))
            ready.set()

        threading.Thread(target=loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(bind(), loop).result(5)
        ready.wait(5)
        return rec

    yield start
    for loop, transport in stops:
        async def close(t: Any = transport) -> None:
            t.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)


@pytest.fixture(scope="module")
def lab_factory(tmp_path_factory: pytest.TempPathFactory, lab_ready: None) -> Iterator[Any]:
    """`make(**settings)` brings a lab up; every lab is torn down at the end."""
    dirs: list[Path] = []

    def make(**settings: Any) -> Path:
        lab_dir = tmp_path_factory.mktemp("lab")
        dirs.append(lab_dir)
        lab_ops.up(lab_dir, lab_ops.LabSettings(start_controller=False, **settings))
        return lab_dir

    try:
        yield make
    finally:
        for lab_dir in dirs:
            faults.down(lab_dir)
