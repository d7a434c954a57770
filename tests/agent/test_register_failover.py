"""Registration goes to the next controller when one does not answer or
has no leader (several controllers: [controller] url is a list)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agentkit import free_port
from receiver import Receiver

from vmha.adapters.system import SystemClock
from vmha.agent.config import load_agent_config
from vmha.agent.main import obtain_secrets
from vmha.agent.state import AgentState


def test_registration_tries_every_controller_before_waiting(tmp_path: Path) -> None:
    down, busy, up = free_port(), free_port(), free_port()
    urls = ", ".join(f'"http://127.0.0.1:{p}"' for p in (down, busy, up))
    path = tmp_path / "agent.toml"
    path.write_text(f'host = "host1"\nsegment = "lab"\n[controller]\n'
                    f'heartbeat = ["127.0.0.1:8791"]\nurl = [{urls}]\ntoken = "tok"\n'
                    f'[api]\nlisten = "127.0.0.1:8792"\ntoken = "t"\n')
    cfg = load_agent_config(path)

    async def main() -> tuple[AgentState, Receiver, Receiver, float]:
        rx_busy, rx_up = Receiver(busy), Receiver(up)
        await rx_busy.start()
        await rx_up.start()
        rx_busy.status = 503
        rx_up.replies["/v1/agents/register"] = {"secret": "s3cret-from-controller3"}
        started = time.monotonic()
        try:
            state = await obtain_secrets(cfg, AgentState(), b"\x01" * 8, SystemClock())
        finally:
            await rx_busy.stop()
            await rx_up.stop()
        return state, rx_busy, rx_up, time.monotonic() - started

    state, rx_busy, rx_up, took = asyncio.run(main())
    assert state.secret == "s3cret-from-controller3"
    assert [r.path for r in rx_busy.requests] == ["/v1/agents/register"]
    assert [r.path for r in rx_up.requests] == ["/v1/agents/register"]
    assert took < 3.0  # no 5 s wait between controllers
