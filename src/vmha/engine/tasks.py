"""Background tasks of the engine's parts, keyed by what they work on.

Jobs, actions, launches, pending restarts and decision timers each keep one
asyncio task per job or instance; `cancel_all` is how every one of them
stops at controller shutdown. No I/O here.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping


async def cancel_all(tasks: MutableMapping[str, asyncio.Task[None]]) -> None:
    """Cancel every task, wait until they have ended, and forget them."""
    running = list(tasks.values())
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    tasks.clear()
