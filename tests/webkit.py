"""Helpers of the dashboard's browser tests: Debian's chromium driven by
Playwright (its own browser download cannot run here, so it is told where
chromium is), a `vmha serve` process, and where screenshots go.

Screenshots are test artifacts: `build/test-artifacts/web/` in the
checkout (or `$VMHA_TEST_ARTIFACTS/web/`), kept after the run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tiers import require_tier

CHROMIUM = "/usr/bin/chromium"
# Headless flags for a root user on a machine with no outside network: no
# sandbox (root), no GPU, and no background requests to Google's services.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
ROOT = Path(__file__).parents[1]


def artifacts() -> Path:
    base = Path(os.environ.get("VMHA_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
    path = base / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_chromium() -> None:
    missing = None
    if not Path(CHROMIUM).exists():
        missing = "Debian's chromium is not installed (scripts/ensure-ops-deps.sh installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed in the venv (pip install -e '.[test]')"
    require_tier("chromium", missing)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def free_low_port() -> int:
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-32000")


class Serve:
    """`vmha serve` on 127.0.0.1 with the given tokens (role -> token)."""

    def __init__(self, directory: Path, tokens: dict[str, str], extra: str = "") -> None:
        self.port = free_low_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = directory / "vmha.db"
        self.log = directory / "serve.log"
        self.config = directory / "vmha.toml"
        lines = [f'[api]\nlisten = "127.0.0.1:{self.port}"']
        for role, token in tokens.items():
            lines.append(f'[[api.tokens]]\ntoken = "{token}"\nrole = "{role}"\n'
                         f'name = "{role.replace(":", "-")}-user"')
        lines.append(f'[store]\nurl = "sqlite:///{self.db}"\n[heartbeat]\nenabled = false\n'
                     "[events]\npoll_interval_s = 0.05\n" + extra)
        self.config.write_text("\n".join(lines))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from vmha.cli.main import main; main()", "serve",
                 "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
