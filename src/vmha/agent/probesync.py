"""Keeps the prober's probe document in step with the controller.

Every `refresh_s` the agent asks

    GET {url}/v1/agents/{host}/probes      Authorization: Bearer <token>
    If-None-Match: "<etag of the document it has>"
    -> 200 {"instances": [...]} with ETag, or 304 when unchanged

(the document is described in `vmha.agent.probes`), hands a new document to
the prober and keeps it in `state_dir/probes.json`: a restarted agent
probes at once, before (or without) the controller answering. Each round
also hands the hypervisor's inventory to the prober, so it watches exactly
the domains that run here. Pull, not push: the controller keeps no
per-agent state, an agent that was down catches up by itself, and a policy
change reaches the agent within `refresh_s`.

Started by `vmha.agent.main`; it never runs a probe itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from vmha.agent.domains import DomainView
from vmha.agent.prober import Prober
from vmha.agent.probes import parse_document
from vmha.agent.report import Client, ControllerDown
from vmha.agent.state import load_json, save_json
from vmha.errors import VmhaError
from vmha.ports import Clock

log = logging.getLogger(__name__)

DOC_FILE = "probes.json"


class ProbeSync:
    def __init__(self, urls: str | Sequence[str], host: str, token: str | None,
                 prober: Prober, inventory: Callable[[], Awaitable[list[DomainView]]],
                 clock: Clock, state_dir: Path, refresh_s: float) -> None:
        # several controllers: a round that fails asks the next one next time
        self._clients = [Client(u, token) for u in ([urls] if isinstance(urls, str) else urls)]
        self._at = 0
        self._path = f"/v1/agents/{host}/probes"
        self._prober = prober
        self._inventory = inventory
        self._clock = clock
        self._state_dir = state_dir
        self._refresh_s = refresh_s
        self._etag = ""
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self.metrics = dict.fromkeys(("documents", "unchanged", "failures"), 0)

    def start(self) -> None:
        saved = load_json(self._state_dir, DOC_FILE)
        if isinstance(saved, dict) and isinstance(saved.get("document"), dict):
            self._etag = str(saved.get("etag", ""))
            self._prober.set_document(parse_document(saved["document"]))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in self._clients:
            client.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # the top of a worker loop: log, keep going
                log.exception("probe document round failed")
            await self._clock.sleep(self._refresh_s)

    async def round(self) -> None:
        """Fetch the document if it changed, then match the inventory."""
        await self._fetch()
        try:
            views = await self._inventory()
        except VmhaError as exc:  # hypervisor reconnecting: keep what we watch
            log.debug("probes: no inventory this round: %s", exc.detail)
            return
        self._prober.reconcile(views)

    async def _fetch(self) -> None:
        headers = {"If-None-Match": f'"{self._etag}"'} if self._etag else {}
        try:
            answer = await self._clients[self._at].request("GET", self._path, None, headers)
        except ControllerDown as exc:
            self._failed(str(exc))
            return
        if answer.status == 304:
            self.metrics["unchanged"] += 1
            self._recovered()
            return
        if answer.status != 200:
            self._failed(f"HTTP {answer.status}: {answer.body[:200].decode('utf-8', 'replace')}")
            return
        try:
            document: Any = json.loads(answer.body)
        except ValueError as exc:
            self._failed(f"not JSON: {exc}")
            return
        self._recovered()
        self._etag = answer.headers.get("etag", "").strip('"')
        self.metrics["documents"] += 1
        self._prober.set_document(parse_document(document))
        try:
            save_json(self._state_dir, DOC_FILE, {"etag": self._etag, "document": document})
        except OSError as exc:
            log.error("cannot keep the probe document in %s: %s", self._state_dir, exc)

    def _failed(self, why: str) -> None:
        self.metrics["failures"] += 1
        self._at = (self._at + 1) % len(self._clients)
        if not self._failing:  # once per outage, not once per round
            log.warning("cannot fetch the probe document from the controller (%s); probing "
                        "with the last one", why)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("probe document: the controller answers again")
        self._failing = False
