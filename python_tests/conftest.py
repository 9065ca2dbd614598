"""Shared fixtures over `lamps.harness`: a tiny random-weight Llama and real vLLM schedulers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamps.harness import build_scheduler, build_vllm_config, write_tiny_llama


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
