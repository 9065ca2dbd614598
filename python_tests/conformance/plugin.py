"""pytest plugin: run vLLM's own scheduler tests against a LAMPS scheduler class.

Loaded with `-p conformance.plugin` (python_tests/ on sys.path) by `conformance.run`, with
`--lamps-class=sync|async|vllm`:

- sync: every name bound to vLLM's `Scheduler` in the vLLM test modules (the `create_scheduler`
  helpers pick it when `async_scheduling` is off; a few tests construct it directly) is
  re-bound to `LampsSyncScheduler` for the duration of each test;
- async: every name bound to vLLM's `AsyncScheduler` is re-bound to `LampsScheduler`;
- vllm: nothing is substituted (vLLM's own classes: the baseline of what this environment can
  run at all).

A test that builds no scheduler of the class under test says nothing about it: it is reported
as skipped ("n/a") instead of passed. Tests in `expected_failures.py` get a strict xfail mark
(an expected failure that passes, or fails at another line than listed for the installed
vLLM version, fails the run). The model hub is replaced by a local cache of configs (`hub.py`)
with HF_HUB_OFFLINE=1; `offline.py` makes any non-loopback network connection raise and, where
vLLM resolves no platform (the CUDA wheels of 0.33 and 0.34 over a CPU torch), gives the
unspecified one the CPU as its device.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

# --- offline model hub: before anything imports huggingface_hub (it reads these at import) ---
_HUB_DIR = Path(tempfile.mkdtemp(prefix="vllm-lamps-hub-"))
atexit.register(shutil.rmtree, _HUB_DIR, True)
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_CACHE": str(_HUB_DIR / "hub"),
    "HF_HOME": str(_HUB_DIR / "home"),
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ[_key] = _value

from conformance.expected_failures import EXPECTED_FAILURES, ExpectedFailure  # noqa: E402
from conformance.hub import write_hub_cache  # noqa: E402
from conformance.offline import (  # noqa: E402
    cpu_device_where_unresolved,
    guard_network,
    release_network,
)

write_hub_cache(_HUB_DIR / "hub")

CLASS_NAMES = {"sync": "LampsSyncScheduler", "async": "LampsScheduler", "vllm": "vLLM"}

_MULTIMODAL = (
    "multimodal model: its vLLM class imports torchvision (no build loads with torch "
    "2.13.0+cpu) and needs HF processor files (not in the offline hub stand-in)"
)
# Models whose tests cannot build a scheduler here, each with the reason; tests naming them
# are skipped. Their vLLM model classes are imported when a config names them.
UNLOADABLE_MODELS: dict[str, str] = {
    "llava-hf/llava-1.5-7b-hf": _MULTIMODAL,
    "Qwen/Qwen2.5-VL-3B-Instruct": _MULTIMODAL,
    "Qwen/Qwen3-Next-80B-A3B-Instruct": (
        "its vLLM class (inspected for the MTP draft) imports compressed_tensors and Triton "
        "kernels, which the scheduler-level environments of vLLM 0.33 and 0.34 leave out"
    ),
}

# Tests skipped whatever the class, each with its reason. Keyed by test function name.
STATIC_SKIPS: dict[str, str] = {}


# ----- options and state --------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lamps-conformance")
    group.addoption(
        "--lamps-class",
        choices=sorted(CLASS_NAMES),
        default="sync",
        help="scheduler slot to fill with a LAMPS class (vllm: none, the baseline)",
    )
    group.addoption(
        "--lamps-results",
        default=None,
        help="write per-test outcomes as JSON to this file",
    )
    group.addoption(
        "--lamps-no-xfail",
        action="store_true",
        help="ignore expected_failures.py (show every failure as a failure)",
    )
    group.addoption(
        "--lamps-order",
        choices=("lamps", "reverse"),
        default="lamps",
        help="diagnostic: 'reverse' replaces the LAMPS score by newest-first order (waiting "
        "and running) to find order-dependent tests that pass only because LAMPS happens to "
        "agree with FCFS",
    )


class _State:
    def __init__(self) -> None:
        self.mode = "sync"
        self.lamps_cls: type | None = None
        self.vllm_cls: type | None = None
        self.built: list[type] = []  # scheduler classes the current test built or used
        self.results: dict[str, dict[str, Any]] = {}
        self.matched_entries: set[int] = set()
        self.version: tuple[int, int] = (0, 0)  # the installed vLLM's (major, minor)
        self.fail_lines: dict[str, int | None] = {}  # node id -> failing line in its file
        self.errors: list[str] = []


S = _State()


def pytest_configure(config: pytest.Config) -> None:
    guard_network()
    for marker in ("cpu_test", "skip_global_cleanup", "slow_test", "optional"):
        config.addinivalue_line("markers", f"{marker}: vLLM test marker")
    S.mode = config.getoption("--lamps-class")
    cpu_device_where_unresolved()
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    from lamps.mechanism.compat import VLLM_VERSION
    from lamps.vllm import LampsScheduler, LampsSyncScheduler

    S.version = VLLM_VERSION[:2]
    S.vllm_cls = {"sync": Scheduler, "async": AsyncScheduler}.get(S.mode)
    S.lamps_cls = {"sync": LampsSyncScheduler, "async": LampsScheduler}.get(S.mode)

    # Record which scheduler classes each test builds (every one runs Scheduler.__init__).
    original_init = Scheduler.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        S.built.append(type(self))
        original_init(self, *args, **kwargs)

    recording_init.__wrapped__ = original_init  # type: ignore[attr-defined]
    Scheduler.__init__ = recording_init  # type: ignore[method-assign]
    # A test may build a scheduler with object.__new__ (no __init__): a call into LAMPS'
    # own methods counts as using the class too.
    from lamps.vllm.scheduler import _LampsMixin

    for name in ("schedule", "add_request", "update_from_output"):
        setattr(_LampsMixin, name, _recording(getattr(_LampsMixin, name)))
    _install_still_clock(_LampsMixin)
    if config.getoption("--lamps-order") == "reverse":
        _install_reverse_order()


def _install_still_clock(mixin: Any) -> None:
    """LAMPS measures step times on its clock; vLLM's tests run a few steps, and a measured
    time that follows the machine's load would flip near-ties between two requests' scores from
    one run to the next. Every LAMPS scheduler a test builds gets a clock that stands still."""
    from lamps.harness import SettableClock

    lamps_init = mixin.__init__

    def still_clock_init(self: Any, *args: Any, **kwargs: Any) -> None:
        lamps_init(self, *args, **kwargs)
        self.set_clock(SettableClock(0.0))

    still_clock_init.__wrapped__ = lamps_init  # type: ignore[attr-defined]
    mixin.__init__ = still_clock_init


def _recording(method: Any) -> Any:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        S.built.append(type(self))
        return method(self, *args, **kwargs)

    wrapper.__name__ = method.__name__
    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


def _install_reverse_order() -> None:
    """Diagnostic policy: newest request first in the waiting queues and in `running`."""
    import numpy as np

    from lamps.vllm.scheduler import _LampsMixin
    from lamps.vllm.scoring import Scorer

    def reverse_running(self: Any, running: Any, *args: Any) -> Any:
        return np.array([-r.arrival_time for r in running], dtype=np.float64)

    _LampsMixin._rank = lambda self, request, state: -request.arrival_time
    _LampsMixin._maybe_rescore = lambda self: None
    Scorer.running_scores = reverse_running


def pytest_unconfigure(config: pytest.Config) -> None:
    release_network()


# ----- collection: static skips and expected failures ---------------------------------------


def _entry_applies(entry: ExpectedFailure, mode: str) -> bool:
    """Whether the entry is expected of this class on the installed vLLM version."""
    if entry.classes and CLASS_NAMES[mode] not in entry.classes:
        return False
    return S.version in entry.lines


def _entry_matches(entry: ExpectedFailure, nodeid: str, mode: str) -> bool:
    if not _entry_applies(entry, mode):
        return False
    return nodeid == entry.test or nodeid.split("[", 1)[0] == entry.test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    use_xfail = S.mode != "vllm" and not config.getoption("--lamps-no-xfail")
    for item in items:
        fn = getattr(item, "function", None)
        name = getattr(item, "originalname", item.name)
        if name in STATIC_SKIPS:
            item.add_marker(pytest.mark.skip(reason=STATIC_SKIPS[name]))
            continue
        if fn is not None:
            try:
                source = inspect.getsource(fn)
            except (OSError, TypeError):
                source = ""
            models = [m for m in UNLOADABLE_MODELS if m in source]
            if models:
                reason = f"{models[0]}: {UNLOADABLE_MODELS[models[0]]}"
                item.add_marker(pytest.mark.skip(reason=reason))
                continue
        if use_xfail:
            for i, entry in enumerate(EXPECTED_FAILURES):
                if _entry_matches(entry, item.nodeid, S.mode):
                    S.matched_entries.add(i)
                    item.add_marker(
                        pytest.mark.xfail(strict=True, reason=f"{entry.kind}: {entry.reason}")
                    )
                    item.user_properties.append(("lamps_xfail", i))
                    break


# ----- per test: substitute the class, record what got built ---------------------------------


@pytest.fixture(autouse=True)
def _lamps_substitute(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Re-bind the vLLM scheduler class to the LAMPS one in every loaded vLLM test module."""
    S.built = []
    if S.lamps_cls is not None:
        for name, module in list(sys.modules.items()):
            if module is None or not (name == "tests" or name.startswith("tests.")):
                continue
            for attr, value in list(vars(module).items()):
                if value is S.vllm_cls:
                    monkeypatch.setattr(module, attr, S.lamps_cls)
    yield


@pytest.fixture
def caplog_vllm(caplog: pytest.LogCaptureFixture) -> Any:
    """vLLM's fixture of the same name: vLLM's logger propagates, captured at INFO."""
    import logging

    logger = logging.getLogger("vllm")
    previous = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO):
            yield caplog
    finally:
        logger.propagate = previous


def _lamps_built() -> bool:
    return S.lamps_cls is not None and any(issubclass(t, S.lamps_cls) for t in S.built)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and call.excinfo is not None:
        S.fail_lines[item.nodeid] = _failing_line(item, call.excinfo)
    if S.mode == "vllm" or rep.when != "call":
        return
    if _lamps_built():
        _check_expected_line(item, rep)
        return
    built = sorted({t.__name__ for t in S.built})
    if not built and rep.failed and not hasattr(rep, "wasxfail"):
        return  # built nothing and failed: an environment problem, shown as is
    if any(k == "lamps_xfail" for k, _ in item.user_properties):
        S.errors.append(
            f"{item.nodeid}: listed as an expected failure of {CLASS_NAMES[S.mode]} but "
            f"builds no {CLASS_NAMES[S.mode]} (builds: {', '.join(built) or 'no scheduler'})"
        )
        return
    what = ", ".join(built) if built else "no scheduler"
    rep.outcome = "skipped"
    if hasattr(rep, "wasxfail"):
        del rep.wasxfail
    path, lineno, _ = item.reportinfo()
    rep.longrepr = (
        str(path),
        (lineno or 0) + 1,
        f"n/a: builds {what}, no {CLASS_NAMES[S.mode]}",
    )


def _failing_line(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> int | None:
    """The line of the test's own file where it failed (the innermost frame there)."""
    path = str(item.path)
    for entry in reversed(excinfo.traceback):
        if str(entry.path) == path:
            return entry.lineno + 1
    return None


def _check_expected_line(item: pytest.Item, rep: pytest.TestReport) -> None:
    """An expected failure must fail at its listed assertion; failing elsewhere is a failure."""
    index = next((i for key, i in item.user_properties if key == "lamps_xfail"), None)
    if index is None or not hasattr(rep, "wasxfail"):
        return
    lines = EXPECTED_FAILURES[index].lines[S.version]
    line = S.fail_lines.get(item.nodeid)
    if line in lines:
        return
    del rep.wasxfail
    rep.outcome = "failed"
    listed = ", ".join(f":{n}" for n in lines)
    rep.longrepr = f"expected to fail at {listed} (expected_failures.py), failed at :{line}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = S.results.setdefault(report.nodeid, {"outcome": None, "reason": ""})
    entry["line"] = S.fail_lines.get(report.nodeid)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            entry["outcome"] = "xfailed" if report.skipped else "xpassed"
            entry["reason"] = report.wasxfail
        elif report.skipped:
            entry["outcome"] = "skipped"
            entry["reason"] = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        else:
            entry["outcome"] = report.outcome
            if report.failed:
                entry["reason"] = _failure_line(report)
                if "[XPASS(strict)]" in str(report.longrepr):
                    entry["outcome"] = "xpassed"
    elif report.when == "teardown" and report.failed:
        entry["outcome"] = "failed"
        entry["reason"] = "teardown: " + _failure_line(report)


def _failure_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0][:300] if crash.message else ""
    return str(report.longrepr).strip().splitlines()[-1][:300] if report.longrepr else ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if S.mode != "vllm" and not session.config.getoption("--lamps-no-xfail"):
        # A stale entry (no longer collected) is an error: the list must stay exact.
        selected = (
            not session.config.getoption("keyword")
            and not session.config.getoption("markexpr")
            and not any("::" in a for a in session.config.args)
        )
        for i, entry in enumerate(EXPECTED_FAILURES):
            if selected and _entry_applies(entry, S.mode) and i not in S.matched_entries:
                S.errors.append(f"expected-failure entry matches no collected test: {entry.test}")
    path = session.config.getoption("--lamps-results")
    if path:
        Path(path).write_text(
            json.dumps(
                {"class": CLASS_NAMES[S.mode], "results": S.results, "errors": S.errors}, indent=1
            )
        )
    if S.errors:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            for line in S.errors:
                tr.write_line(f"CONFORMANCE ERROR: {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
