"""The whole API under schemathesis, every check, against a real `vmha serve`.

`run(directory, roles, max_examples, phases, seed)` starts a controller
(tests/cli/live_server.py: SQLite, the engine running, heartbeats off),
seeds a small cloud (two segments, hosts, a policy, instances of two
projects), runs `schemathesis run` once per role with `--checks all`
(`positive_data_acceptance` replaced by the version in st_hooks.py that
accepts only the data-dependent 422s listed there), stops the controller
and returns what happened: per role the exit code, the failure lines of
schemathesis' summary, how many cases it generated, and every
"unexpected error" (a 500) the controller logged.

Used by bench/schemathesis_run.py (large budget, results saved) and
tests/api/test_api_fuzz_live.py (a smaller one, in `make test`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "cli"))
from live_server import ADMIN, LiveServer  # noqa: E402

PROJECT = "fuzz-project-token-1"
EXTRA = f'[[api.tokens]]\ntoken = "{PROJECT}"\nrole = "project:p1"\nname = "p1"\n'
ROLE_TOKENS = {"admin": ADMIN, "project:p1": PROJECT}
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@dataclass
class RoleResult:
    role: str
    exit_code: int
    seconds: float
    cases: int
    failures: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    roles: list[RoleResult]
    server_errors: list[str]

    @property
    def clean(self) -> bool:
        return not self.server_errors and all(r.exit_code == 0 for r in self.roles)


def seed(url: str) -> None:
    """A small cloud for the operations to find (the run changes it)."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    bodies = [
        ("/v1/policies", {"name": "gold", "policy": {"priority": 900}}),
        ("/v1/segments", {"name": "seg-a", "default_policy": "gold"}),
        ("/v1/segments", {"name": "seg-b"}),
        ("/v1/hosts", {"name": "h1", "segment": "seg-a"}),
        ("/v1/hosts", {"name": "h2", "segment": "seg-a"}),
        ("/v1/instances", {"id": "a1", "name": "vm-a1", "host": "h1", "project": "p1"}),
        ("/v1/instances", {"id": "b1", "name": "vm-b1", "host": "h2", "project": "p2"}),
    ]
    for path, body in bodies:
        httpx.post(f"{url}{path}", json=body, headers=headers, timeout=10).raise_for_status()


def run_role(url: str, role: str, out: Path, max_examples: int, phases: str,
             seed_value: int) -> RoleResult:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "st_hooks.py")}
    cmd = [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "all",
           "--exclude-checks", "positive_data_acceptance", "--no-color", "--workers", "1",
           "-H", f"Authorization: Bearer {ROLE_TOKENS[role]}", "-n", str(max_examples),
           "--phases", phases, "--seed", str(seed_value), "--request-timeout", "20",
           "--generation-database", "none"]
    started = time.monotonic()
    with out.open("w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    text = out.read_text()
    cases = re.search(r"(\d+) generated", text)
    failures = re.findall(r"❌ (ST\d+ [^\n]*)", text)
    return RoleResult(role, done.returncode, round(time.monotonic() - started, 1),
                      int(cases.group(1)) if cases else 0, failures)


def version() -> str:
    done = subprocess.run([str(SCHEMATHESIS), "--version"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def run(directory: Path, roles: tuple[str, ...], max_examples: int, phases: str,
        seed_value: int) -> RunResult:
    server = LiveServer(directory, extra=EXTRA)
    server.start()
    try:
        seed(server.url)
        results = [run_role(server.url, role, directory / f"schemathesis-{i}.txt",
                            max_examples, phases, seed_value)
                   for i, role in enumerate(roles)]
    finally:
        server.stop()
    log = server.log.read_text()
    errors = [line for line in log.splitlines() if "unexpected error on" in line]
    return RunResult(results, errors)
