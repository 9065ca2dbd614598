"""vLLM's log level under the ``lamps`` commands: the one place it is set.

vLLM logs at INFO when it is imported and warns once per scheduler built (block size,
connector API, ...); a replay builds one per (policy, load, seed), and the commands' tables are
their output. So ``lamps`` quiets vLLM's loggers below ERROR unless ``--vllm-logs`` is given.
The choice travels in the environment, for vLLM and for the replay's worker processes:
``VLLM_LOGGING_LEVEL`` (which vLLM reads when it is first imported; a value already set wins)
and ``LAMPS_VLLM_LOGS`` (``1`` shows vLLM's lines, ``0`` quiets them).
"""

from __future__ import annotations

import logging
import os

SHOW_VLLM_LOGS = "LAMPS_VLLM_LOGS"
"""The environment variable that carries the choice: ``1`` shows vLLM's log lines, ``0`` not."""


def choose_vllm_logs(show: bool) -> None:
    """The command line's choice (``--vllm-logs``), made before vLLM is imported: written to
    the environment (worker processes inherit it), then applied to vLLM's loggers."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if show else "ERROR")
    os.environ[SHOW_VLLM_LOGS] = "1" if show else "0"
    apply_vllm_logs()


def apply_vllm_logs(*, quiet_unless_chosen: bool = True) -> None:
    """Sets vLLM's loggers to ERROR unless ``LAMPS_VLLM_LOGS=1``.

    With the variable unset (no ``lamps`` command chose), they go quiet only when
    ``quiet_unless_chosen``: a replay that runs does so, a mere import of ``lamps.replay``
    (``quiet_unless_chosen=False``) leaves the level as it is.
    """
    choice = os.environ.get(SHOW_VLLM_LOGS)
    if choice == "1" or (choice is None and not quiet_unless_chosen):
        return
    logging.getLogger("vllm").setLevel(logging.ERROR)
