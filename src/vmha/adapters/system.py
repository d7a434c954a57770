"""The real Clock and IdGen: wall time, asyncio sleep, uuid4.

The only place outside the simulator that reads the time or makes ids."""

from __future__ import annotations

import asyncio
import time
import uuid


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class UuidGen:
    def new_id(self) -> str:
        return str(uuid.uuid4())


class SequentialIds:
    """Deterministic ids (`prefix-000001` ...) for tests and the simulator."""

    def __init__(self, prefix: str = "id") -> None:
        self._prefix = prefix
        self._n = 0

    def new_id(self) -> str:
        self._n += 1
        return f"{self._prefix}-{self._n:06d}"
