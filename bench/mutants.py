"""Which safety mutations do the property test and the scenarios catch?
(issue 11 item 14)

Each mutation breaks one safety rule of the controller in a throw-away copy
of `src/` (`git archive HEAD src`, patched by an exact string replacement
the script asserts it found; the repository is never touched):

- fence-any-result-confirmed: every fence confirmation result counts as
  confirmed (a BMC stuck on, unreachable or a host still in contact: fenced)
- guard-never-pauses: the mass-failure guard never pauses a segment
- partitioned-as-failed: a round that finds the host partitioned (peers
  reach it) makes it failed

and a narrower form of the first, fence-power-failure-confirmed: only a
failed confirmation without a self-fence sample (a power status check, a
manual fence's wait) counts as confirmed.

For the copy unchanged (the control, which must pass) and for each
mutation it runs `pytest -q tests/property` once per seed
(VMHA_PROPERTY_SEED, tests/property/seeding.py) and `pytest -q
tests/scenarios` once, with PYTHONPATH pointing at the copy, and records
which seeds failed, the first invariant broken in each failing test, and
how many scenarios failed. First it checks that the runs really import
the copy: `vmha.__file__` must lie in it, and the property test on a copy
whose `vmha/__init__.py` raises must fail.

Hypothesis's shrinking is switched off (a pytest plugin written into the
copy loads a profile without the shrink phase): whether a mutation is
caught does not depend on it, and shrinking a failure of a broken
controller can take minutes. The examples per test are the module's own.

    nice -n 10 .venv/bin/python bench/mutants.py [--seeds 1 2 3] [--only NAME ...]
        [--no-scenarios]

Prints a summary and writes bench/results/mutants.json.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "mutants.json"
PROPERTY_MODULE = ROOT / "tests" / "property" / "test_invariants.py"
SEED_ENV = "VMHA_PROPERTY_SEED"  # tests/property/seeding.py
RUN_TIMEOUT_S = 1800
PLUGIN = "mutants_no_shrink"
PLUGIN_TEXT = '''"""Loaded by bench/mutants.py: hypothesis without the shrink phase."""
from hypothesis import Phase, settings

settings.register_profile(
    "mutants", phases=[p for p in Phase if p not in (Phase.shrink, Phase.explain)])
settings.load_profile("mutants")
'''


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str  # under src/
    old: str
    new: str


MUTANTS = (
    Mutant(
        "fence-any-result-confirmed",
        "every result of a fence confirmation (power status, self-fence sample, passive "
        "read) is taken as confirmed",
        "vmha/domain/recovery.py",
        "                   now: float) -> Decision:\n"
        "    if r.sample is not None:\n"
        "        return _apply_sample(job, data, intent, r, r.sample, now)\n",
        "                   now: float) -> Decision:\n"
        "    return _fenced(job, data, r.detail, now)\n"
        "    if r.sample is not None:\n"
        "        return _apply_sample(job, data, intent, r, r.sample, now)\n",
    ),
    Mutant(
        "fence-power-failure-confirmed",
        "the narrower form of the first: a failed confirmation without a self-fence sample "
        "(a power fence's status check with the BMC stuck on or unreachable, a manual "
        "fence's wait for an ack) is taken as confirmed; self-fence samples as before",
        "vmha/domain/recovery.py",
        "    if r.ok:\n        return _fenced(job, data, r.detail, now)\n",
        "    if True:\n        return _fenced(job, data, r.detail, now)\n",
    ),
    Mutant(
        "guard-never-pauses",
        "the mass-failure guard never pauses a segment",
        "vmha/domain/guard.py",
        "    return health.total > 0 and health.recent_share > threshold and health.recent > 1\n",
        "    return False\n",
    ),
    Mutant(
        "partitioned-as-failed",
        "a confirmation round whose peers reach the host (partitioned) makes it failed",
        "vmha/domain/health.py",
        "    if verdict is Verdict.PARTITIONED and state is HostState.SUSPECT:\n"
        "        return HostState.PARTITIONED\n",
        "    if verdict is Verdict.PARTITIONED and state is HostState.SUSPECT:\n"
        "        return HostState.FAILED\n",
    ),
)
BROKEN = Mutant("broken-copy", "vmha/__init__.py raises: the runs must fail",
                "vmha/__init__.py", "", "raise RuntimeError('mutants: broken copy')\n")

VIOLATION = re.compile(r"\{'t': ([0-9.]+), 'invariant': '(\w+)', 'subject': '([^']*)', "
                       r"'what': (['\"])(.*?)\4\}")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_copy(parent: Path, mutant: Mutant | None) -> Path:
    """`git archive HEAD src` into `parent`, mutated; returns the copy's src."""
    parent.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD", "src"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(parent)], input=archive, check=True)
    src = parent / "src"
    (src / f"{PLUGIN}.py").write_text(PLUGIN_TEXT)
    if mutant is not None:
        target = src / mutant.path
        text = target.read_text()
        if mutant.old:
            assert text.count(mutant.old) == 1, f"{mutant.name}: patch site not found once"
            target.write_text(text.replace(mutant.old, mutant.new))
        else:
            target.write_text(text + mutant.new)
    return src


def patch_of(mutant: Mutant) -> str:
    old = (ROOT / "src" / mutant.path).read_text()
    new = old.replace(mutant.old, mutant.new)
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        f"a/src/{mutant.path}", f"b/src/{mutant.path}", n=1))


def env_for(src: Path, seed: int | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    if seed is not None:
        env[SEED_ENV] = str(seed)
    return env


def imported_from(src: Path) -> str:
    out = subprocess.run([sys.executable, "-c", "import vmha; print(vmha.__file__)"],
                         env=env_for(src), capture_output=True, text=True, check=True)
    where = out.stdout.strip()
    assert where.startswith(str(src)), f"vmha imported from {where}, not from the copy {src}"
    return where


def pytest(src: Path, suite: str, seed: int | None, xml: Path) -> dict[str, Any]:
    # verbosity_assertions=2: the assertion message (the violations) in full
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", PLUGIN,
           "-o", "verbosity_assertions=2", f"tests/{suite}", f"--junitxml={xml}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(src, seed), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    wall = time.monotonic() - started
    run: dict[str, Any] = {"exit": proc.returncode, "wall_s": round(wall, 1)}
    if seed is not None:
        run["seed"] = seed
        seen = re.search(r"property tests: seed (\d+)", proc.stdout)
        run["seed_reported"] = int(seen.group(1)) if seen else None
    if not xml.exists():  # collection never happened
        run.update(tests=0, failed=0, failures=[], output_tail=proc.stdout[-2000:]
                   + proc.stderr[-2000:])
        return run
    suites = ET.parse(xml).getroot()  # noqa: S314 (our own pytest run wrote it)
    failures = []
    tests = 0
    for case in suites.iter("testcase"):
        tests += 1
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is None:
            continue
        message = bad.get("message", "")  # pytest may shorten it: the full text first
        found = VIOLATION.search(bad.text or "") or VIOLATION.search(message)
        first = (f"{found.group(1)} {found.group(3)}: INVARIANT {found.group(2)} broken: "
                 f"{found.group(5)}" if found else message.strip().splitlines()[0][:300])
        failures.append({"test": case.get("name", ""), "first": first})
    run.update(tests=tests, failed=len(failures), failures=failures)
    return run


def check(name: str, src: Path, seeds: list[int], scenarios: bool,
          work: Path) -> dict[str, Any]:
    runs = []
    for seed in seeds:
        run = pytest(src, "property", seed, work / f"{name}-property-{seed}.xml")
        runs.append(run)
        print(f"  {name}: property seed {seed}: {run['failed']} of {run['tests']} failed "
              f"({run['wall_s']} s)", flush=True)
    failed_seeds = [r["seed"] for r in runs if r["exit"] != 0]
    firsts = [f["first"] for r in runs for f in r["failures"]]
    out: dict[str, Any] = {"property": {
        "caught": bool(failed_seeds), "seeds_failed": failed_seeds,
        "first_failure": firsts[0] if firsts else None, "runs": runs}}
    if scenarios:
        run = pytest(src, "scenarios", None, work / f"{name}-scenarios.xml")
        print(f"  {name}: scenarios: {run['failed']} of {run['tests']} failed "
              f"({run['wall_s']} s)", flush=True)
        out["scenarios"] = {"caught": run["exit"] != 0, "failed": run["failed"],
                            "tests": run["tests"], "exit": run["exit"],
                            "wall_s": run["wall_s"],
                            "failing": sorted(f["test"] for f in run["failures"])}
    return out


def examples_per_test() -> dict[str, int]:
    """The examples each property test asks for (its settings in the module)."""
    text = PROPERTY_MODULE.read_text()
    default = int(re.search(r"max_examples=(\d+)", text).group(1))  # type: ignore[union-attr]
    out = {}
    for block in text.split("@seed(SEED)")[1:]:
        n = re.search(r"max_examples=(\d+)", block.split("def ")[0])
        test = re.search(r"def (test_\w+)", block)
        if test:
            out[test.group(1)] = int(n.group(1)) if n else default
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--only", nargs="+", choices=[m.name for m in MUTANTS])
    ap.add_argument("--no-scenarios", action="store_true")
    args = ap.parse_args()
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    scenarios = not args.no_scenarios
    started = time.monotonic()
    load_start = os.getloadavg()
    out: dict[str, Any] = {
        "benchmark": "safety mutations caught by the property test and the scenarios",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        # the last commit that changed src/ (what was mutated): stable across rebases
        "src_commit": git("log", "-1", "--format=%h", "--", "src"),
        "src_dirty": bool(git("status", "--porcelain", "--", "src")),
        "command": "nice -n 10 .venv/bin/python bench/mutants.py --seeds "
                   + " ".join(map(str, args.seeds))
                   + (" --only " + " ".join(args.only) if args.only else "")
                   + (" --no-scenarios" if not scenarios else ""),
        "seeds": args.seeds,
        "settings": {
            "property": "pytest -q tests/property, once per seed (VMHA_PROPERTY_SEED)",
            "examples_per_test": examples_per_test(),
            "hypothesis_phases": "explicit, reuse, generate, target (no shrink, no explain)",
            "scenarios": "pytest -q tests/scenarios, once" if scenarios else "not run",
            "copy": "git archive HEAD src, patched in a temporary directory; "
                    "PYTHONPATH=<copy>/src",
            "nice": os.nice(0),
        },
        "python": sys.version.split()[0],
        "load_avg_start": [round(x, 2) for x in load_start],
    }
    with tempfile.TemporaryDirectory(prefix="vmha-mutants-") as tmp:
        work = Path(tmp)
        broken = make_copy(work / "broken", BROKEN)
        sanity = pytest(broken, "property", args.seeds[0], work / "broken.xml")
        assert sanity["exit"] != 0, "the property test passed on a broken copy: not the copy"
        control_src = make_copy(work / "control", None)
        out["sanity"] = {"broken_copy_exit": sanity["exit"],
                         "control_imports": imported_from(control_src).replace(tmp, "<tmp>")}
        print(f"sanity: broken copy exits {sanity['exit']}; control imports "
              f"{out['sanity']['control_imports']}", flush=True)
        out["control"] = check("control", control_src, args.seeds, scenarios, work)
        out["mutants"] = []
        for m in mutants:
            src = make_copy(work / m.name, m)
            imported_from(src)
            result = {"name": m.name, "what": m.what, "patch": patch_of(m),
                      **check(m.name, src, args.seeds, scenarios, work)}
            out["mutants"].append(result)
    out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["wall_s"] = round(time.monotonic() - started, 1)
    control = out["control"]
    out["control_passed"] = not control["property"]["caught"] and not control.get(
        "scenarios", {}).get("caught", False)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\ncontrol (no mutation): {'passed' if out['control_passed'] else 'FAILED'}")
    for r in out["mutants"]:
        p, s = r["property"], r.get("scenarios")
        prop = (f"caught by seeds {', '.join(map(str, p['seeds_failed']))} of "
                f"{len(args.seeds)}" if p["caught"] else f"not caught ({len(args.seeds)} seeds)")
        scen = f"{s['failed']} of {s['tests']} scenarios fail" if s else "scenarios not run"
        print(f"{r['name']}: property test {prop}; {scen}")
        if p["first_failure"]:
            print(f"    first: {p['first_failure']}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    if not out["control_passed"]:
        sys.exit("the control run failed: the figures above mean nothing")


if __name__ == "__main__":
    main()
