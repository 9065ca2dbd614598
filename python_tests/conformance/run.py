"""Run vLLM's own scheduler tests against the LAMPS classes and summarise them per class.

Usage (what scripts/conformance runs):
    python python_tests/conformance/run.py [--classes sync,async] [--sdist FILE] [--jobs 2]
                                           [--baseline] [--no-xfail] [--show-log]
                                           [-- extra pytest args]

One pytest run per class, in the cached copy of vLLM's tests (fetch.py), with the plugin
(plugin.py) substituting the class. Exit status 0 only when no test failed, no expected failure
passed and the expected-failure list matched exactly.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON_TESTS = HERE.parent
sys.path.insert(0, str(PYTHON_TESTS))

from conformance.fetch import TARGET_FILES, ensure_tests, installed_vllm_version  # noqa: E402

TEST_FILES = [p for p in TARGET_FILES if Path(p).name.startswith("test_")]
MAX_LINES = 150
LABELS = {"sync": "LampsSyncScheduler", "async": "LampsScheduler", "vllm": "vLLM (baseline)"}


def run_class(
    mode: str, tests_dir: Path, work: Path, extra: list[str], no_xfail: bool
) -> tuple[str, int, Path, Path, float]:
    results = work / f"{mode}.json"
    log = work / f"{mode}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PYTHON_TESTS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("PYTHONHASHSEED", "0")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(HERE / "pytest.ini"),
        f"--rootdir={tests_dir}",
        f"--basetemp={work / ('tmp-' + mode)}",
        "-p",
        "conformance.plugin",
        f"--lamps-class={mode}",
        f"--lamps-results={results}",
        "-q",
        "-rfE",
        *(["--lamps-no-xfail"] if no_xfail else []),
        *TEST_FILES,
        *extra,
    ]
    started = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(
            cmd, cwd=tests_dir, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    return mode, rc, results, log, time.monotonic() - started


def summarise(mode: str, rc: int, results: Path, log: Path, seconds: float, show_log: bool) -> bool:
    label = LABELS[mode]
    if not results.exists():
        print(f"{label}: pytest exited {rc} before reporting; log follows")
        print(log.read_text()[-20000:])
        return False
    data = json.loads(results.read_text())
    counts: collections.Counter[str] = collections.Counter()
    skips: collections.Counter[str] = collections.Counter()
    bad = []
    for nodeid, r in data["results"].items():
        outcome = r["outcome"] or "error"
        counts[outcome] += 1
        if outcome == "skipped":
            reason = r["reason"].removeprefix("Skipped: ")
            skips["n/a (builds no " + label + ")" if reason.startswith("n/a") else reason] += 1
        elif outcome in ("failed", "xpassed", "error"):
            bad.append((outcome, nodeid, r["reason"]))
    n_skip = sum(skips.values())
    print(
        f"{label:<20} {counts['passed']:>4} passed  {counts['xfailed']:>3} xfailed  "
        f"{counts['failed'] + counts['error']:>3} failed  {counts['xpassed']:>3} unexpected "
        f"passes  {n_skip:>4} skipped   ({seconds:.0f} s)"
    )
    for reason, n in skips.most_common():
        print(f"    skipped {n:>3}: {reason}")
    for outcome, nodeid, reason in bad:
        what = "UNEXPECTED PASS" if outcome == "xpassed" else "FAILED"
        print(f"    {what} {nodeid}\n        {reason}")
    for err in data.get("errors", []):
        print(f"    LIST ERROR {err}")
    ok = not bad and not data.get("errors") and rc in (0, 5)
    if rc not in (0, 1, 5):
        print(f"    pytest exited {rc}: see {log}")
        ok = False
    if show_log or (bad and mode != "vllm"):
        text = log.read_text()
        if not show_log and "= FAILURES =" in text:
            # The failures section only, at most MAX_LINES lines (the full log is kept).
            text = text[text.rfind("\n", 0, text.find("= FAILURES =")) + 1 :]
            lines = text.splitlines()
            if len(lines) > MAX_LINES:
                lines = [*lines[:MAX_LINES], f"... ({len(lines) - MAX_LINES} more lines)"]
            text = "\n".join(lines)
        print(f"---- pytest output ({label}; full log: {log}) ----")
        print(text)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--classes",
        default="sync,async",
        help="comma-separated: sync (LampsSyncScheduler), async (LampsScheduler); default both",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also run the same tests on vLLM's own classes"
    )
    parser.add_argument(
        "--sdist", type=Path, help="use this local vllm-<version>.tar.gz instead of downloading"
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel pytest runs (default 2)")
    parser.add_argument("--no-xfail", action="store_true", help="ignore the expected-failure list")
    parser.add_argument("--show-log", action="store_true", help="print the full pytest logs")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args(argv)

    modes = [m.strip() for m in args.classes.split(",") if m.strip()]
    if args.baseline:
        modes.append("vllm")
    unknown = [m for m in modes if m not in LABELS]
    if unknown:
        parser.error(f"unknown class {unknown[0]!r} (sync, async)")

    started = time.monotonic()
    version = installed_vllm_version()
    tests_dir = ensure_tests(version, args.sdist)
    print(f"== vLLM {version} scheduler tests against LAMPS ({', '.join(TEST_FILES)})")
    print(f"   tests: {tests_dir}")
    work = Path(tempfile.mkdtemp(prefix="vllm-lamps-conformance-"))
    with ThreadPoolExecutor(max_workers=max(1, min(args.jobs, 2))) as pool:
        runs = list(
            pool.map(
                lambda m: run_class(m, tests_dir, work, args.pytest_args, args.no_xfail), modes
            )
        )
    ok = True
    for mode, rc, results, log, seconds in runs:
        ok &= summarise(mode, rc, results, log, seconds, args.show_log)
    elapsed = time.monotonic() - started
    if ok:
        shutil.rmtree(work, ignore_errors=True)
        print(f"== conformance OK in {elapsed:.0f} s")
    else:
        print(f"== conformance FAILED in {elapsed:.0f} s (logs kept in {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
