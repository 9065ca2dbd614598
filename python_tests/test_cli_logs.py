"""vLLM's log level under the ``lamps`` commands: chosen in one place (``lamps.logs``)."""

from __future__ import annotations

import logging
import os

import pytest

from lamps.logs import SHOW_VLLM_LOGS, apply_vllm_logs, choose_vllm_logs


def test_vllm_log_level_is_chosen_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("vllm")  # conftest restores its level after the test
    for name in (SHOW_VLLM_LOGS, "VLLM_LOGGING_LEVEL"):
        monkeypatch.setenv(name, "")  # recorded, so that the test's values are undone
        monkeypatch.delenv(name)
    logger.setLevel(logging.INFO)
    apply_vllm_logs(quiet_unless_chosen=False)  # importing lamps.replay: no command chose
    assert logger.level == logging.INFO
    apply_vllm_logs()  # a replay running
    assert logger.level == logging.ERROR
    logger.setLevel(logging.INFO)
    choose_vllm_logs(True)  # `lamps replay --vllm-logs`
    assert (os.environ[SHOW_VLLM_LOGS], os.environ["VLLM_LOGGING_LEVEL"]) == ("1", "INFO")
    apply_vllm_logs()
    assert logger.level == logging.INFO
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")  # the user's own setting wins
    choose_vllm_logs(False)
    assert logger.level == logging.ERROR
    assert (os.environ[SHOW_VLLM_LOGS], os.environ["VLLM_LOGGING_LEVEL"]) == ("0", "DEBUG")
