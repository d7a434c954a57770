"""The whole API under schemathesis with every check and a large budget
(issue 11): no 5xx, no response that breaks /openapi.json.

Runs tests/api/st_run.py against a real `vmha serve` (SQLite, the engine
running; a seeded small cloud) once per role (admin, and a `project:p1`
token), `--checks all` (positive_data_acceptance as tests/api/st_hooks.py
refines it), phases examples, coverage, fuzzing and stateful. Prints per
role the exit code, the cases generated and the failure lines, and every
"unexpected error" (500) the controller logged; writes
bench/results/schemathesis.json with the date, the commit, the load and
the settings. Exit 1 when the run was not clean.

    .venv/bin/python bench/schemathesis_run.py [--max-examples 200] [--seed 1]
        [--phases examples,coverage,fuzzing,stateful] [--keep DIR]
        [--roles admin,project:p1]

`--roles` runs some of the roles again (after a fix): the file keeps the
other roles' last results, each role with the date and commit of its run,
and is clean only when every role's last run was.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import labrun  # bench/labrun.py (this script's folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "api"))
import st_run  # tests/api/st_run.py

RESULTS = Path(__file__).parent / "results" / "schemathesis.json"
ROLES = ("admin", "project:p1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the server log and schemathesis' output here")
    parser.add_argument("--roles", default=",".join(ROLES),
                        help="the roles to run (default: all); the others keep their last run")
    args = parser.parse_args()
    roles = tuple(r for r in args.roles.split(",") if r)
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        parser.error(f"--roles: {', '.join(unknown) or 'none given'}; known: {', '.join(ROLES)}")
    start = labrun.machine()
    with tempfile.TemporaryDirectory(prefix="vmha-st-") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        result = st_run.run(directory, roles, args.max_examples, args.phases, args.seed)
    for role in result.roles:
        print(f"{role.role}: exit {role.exit_code}, {role.cases} cases, {role.seconds} s")
        for line in role.failures:
            print(f"  {line}")
    for line in result.server_errors:
        print(f"server: {line}")
    ran = [{**asdict(r), "date": start["date"], "commit": start["commit"],
            "clean": r.exit_code == 0} for r in result.roles]
    kept = []
    if set(roles) != set(ROLES) and RESULTS.exists():
        earlier = json.loads(RESULTS.read_text())
        kept = [{"date": earlier.get("date"), "commit": earlier.get("commit"),
                 "clean": r.get("exit_code") == 0 and not earlier.get("server_errors"), **r}
                for r in earlier.get("roles", []) if r["role"] not in roles]
    every = sorted(kept + ran, key=lambda r: ROLES.index(r["role"]))
    doc = {"benchmark": "schemathesis", **start,
           "loadavg_1_5_15_at_end": labrun.machine()["loadavg_1_5_15"],
           "settings": {"max_examples": args.max_examples, "seed": args.seed,
                        "phases": args.phases, "roles": list(roles), "checks": "all",
                        "schemathesis": st_run.version()},
           "clean": result.clean and all(r["clean"] for r in kept), "roles": every,
           "server_errors": result.server_errors}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'clean' if result.clean else 'NOT clean'}; wrote {RESULTS}")
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
