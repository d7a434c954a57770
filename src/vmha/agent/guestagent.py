"""Commands to the QEMU guest agent inside a domain: guest-ping and guest-exec.

`GuestAgent(hypervisor)` sends QMP commands to a domain's qemu-ga over its
virtio-serial channel (`org.qemu.guest_agent.0`) through libvirt's
`qemuAgentCommand`: `ping` (the guest-agent heartbeat) and `run` (a command
inside the guest, `guest-exec` then `guest-exec-status` until it exits or
the timeout, exit code, and stdout/stderr cut to `output_max` bytes each).

libvirt blocks the calling thread until the guest answers or the timeout
(whole seconds, at least 1), so the calls run on a pool of their own, apart
from the hypervisor's domain operations: a hung guest holds one of these
threads for its timeout and never delays another guest's domain
operations; the prober (`vmha.agent.prober`) keeps one call in flight per
domain, so with `WORKERS` threads as many guests may hang at once before a
healthy one waits. A command still running at its timeout keeps running in
the guest (qemu-ga cannot kill it): the result says it timed out.

Errors: TemporaryError when the agent does not answer (not connected yet,
guest hung, timeout), Conflict when the domain has no guest agent channel
or qemu-ga refused the command (a missing program, say), `NotRunning` (a
Conflict) when the domain is not running, NotFound when it does not exist.
Used by the prober and the agent's HTTP API; it never decides anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import libvirt
import libvirt_qemu

from vmha.domain.spec import GUEST_AGENT_CHANNEL
from vmha.errors import Conflict, NotFound, TemporaryError, VmhaError

if TYPE_CHECKING:
    from vmha.agent.hypervisor import LibvirtHypervisor

T = TypeVar("T")
WORKERS = 32
OUTPUT_MAX = 4096
_POLL_MIN_S, _POLL_MAX_S = 0.01, 0.1
_UNANSWERED = {libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED,
               libvirt.VIR_ERR_OPERATION_TIMEOUT}


class NotRunning(Conflict):
    """The domain stopped or paused: nothing in it can answer (not a verdict)."""


@dataclass(frozen=True)
class ExecResult:
    """What a command run in the guest did."""

    exitcode: int | None  # None: killed by a signal, or still running at the timeout
    signal: int | None
    stdout: str
    stderr: str
    truncated: bool  # some output was cut at output_max
    timed_out: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exitcode == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for logs and events: how it ended and its last output."""
        if self.timed_out:
            how = f"still running after {self.duration_s:.1f} s"
        elif self.signal is not None:
            how = f"killed by signal {self.signal}"
        else:
            how = f"exit code {self.exitcode}"
        tail = (self.stderr or self.stdout).strip().splitlines()
        return f"{how}: {tail[-1][:200]}" if tail else how

    def to_json(self) -> dict[str, Any]:
        return {"exitcode": self.exitcode, "signal": self.signal, "stdout": self.stdout,
                "stderr": self.stderr, "truncated": self.truncated,
                "timed_out": self.timed_out, "duration_s": round(self.duration_s, 3)}


def channel_state(xml: str) -> str | None:
    """The guest agent channel's state in a live domain XML: "connected",
    "disconnected" or "" (unknown); None when there is no such channel."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML of the domain
    for target in root.iterfind("./devices/channel/target"):
        if target.get("name") == GUEST_AGENT_CHANNEL:
            return target.get("state", "")
    return None


def _whole_seconds(timeout_s: float) -> int:
    return max(1, math.ceil(timeout_s))


def _command(dom: libvirt.virDomain, execute: str, arguments: dict[str, Any] | None,
             timeout_s: float) -> Any:
    """One QMP command to qemu-ga; its `return` value (blocking)."""
    cmd: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        cmd["arguments"] = arguments
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), _whole_seconds(timeout_s), 0)
    except libvirt.libvirtError as exc:
        raise _translate(exc, dom.name(), execute, timeout_s) from exc
    return json.loads(reply).get("return")


def _translate(exc: libvirt.libvirtError, name: str, execute: str,
               timeout_s: float) -> VmhaError:
    code, msg = exc.get_error_code(), exc.get_error_message() or str(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound("domain", name)
    if code in _UNANSWERED:
        return TemporaryError(f"guest agent of {name} did not answer {execute} "
                              f"(timeout {_whole_seconds(timeout_s)} s): {msg}", 1.0)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return NotRunning(f"domain {name} is not running: {msg}")
    if code == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED:
        return Conflict(f"domain {name} has no guest agent channel: {msg}")
    return Conflict(f"guest agent of {name} refused {execute}: {msg}")


def _exec(dom: libvirt.virDomain, argv: Sequence[str], timeout_s: float,
          output_max: int) -> ExecResult:
    """guest-exec, then guest-exec-status until exit or timeout (blocking)."""
    start = time.monotonic()
    deadline = start + timeout_s
    pid = _command(dom, "guest-exec", {"path": argv[0], "arg": list(argv[1:]),
                                       "capture-output": True}, timeout_s)["pid"]
    pause = _POLL_MIN_S
    while True:
        left = max(0.0, deadline - time.monotonic())
        status = _command(dom, "guest-exec-status", {"pid": pid}, max(left, 1.0))
        if status.get("exited") or time.monotonic() >= deadline:
            break
        time.sleep(min(pause, left))
        pause = min(pause * 2, _POLL_MAX_S)
    out, cut_out = _decode(status.get("out-data", ""), output_max)
    err, cut_err = _decode(status.get("err-data", ""), output_max)
    return ExecResult(status.get("exitcode"), status.get("signal"), out, err,
                      cut_out or cut_err or bool(status.get("out-truncated")),
                      not status.get("exited"), time.monotonic() - start)


def _decode(data: str, limit: int) -> tuple[str, bool]:
    raw = base64.b64decode(data or "")
    return raw[:limit].decode("utf-8", "replace"), len(raw) > limit


class GuestAgent:
    def __init__(self, hypervisor: LibvirtHypervisor, workers: int = WORKERS) -> None:
        self._hv = hypervisor
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="guest-agent")

    async def _on_domain(self, uuid: str, fn: Callable[..., T], *args: Any) -> T:
        dom = await self._hv.lookup(uuid)
        if dom is None:
            raise NotFound("domain", uuid)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, dom, *args)

    async def channel(self, uuid: str) -> str | None:
        """The channel's state (see `channel_state`); None: no channel."""
        return await self._on_domain(uuid, lambda dom: channel_state(dom.XMLDesc(0)))

    async def ping(self, uuid: str, timeout_s: float) -> None:
        """guest-ping; TemporaryError when the guest agent does not answer."""
        await self._on_domain(uuid, _command, "guest-ping", None, timeout_s)

    async def run(self, uuid: str, argv: Sequence[str], timeout_s: float,
                  output_max: int = OUTPUT_MAX) -> ExecResult:
        """Run `argv` in the guest (no shell); its result, even when it failed."""
        if not argv:
            raise Conflict("no command to run in the guest")
        return await self._on_domain(uuid, _exec, list(argv), timeout_s, output_max)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
