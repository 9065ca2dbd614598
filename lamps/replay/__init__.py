"""Replay of augmented-LLM workloads through vLLM's real scheduler on a simulated GPU clock.

``lamps replay`` sets ``LAMPS_VLLM_LOGS=0`` (unless ``--vllm-logs``) before vLLM is imported,
here and in its worker processes, so vLLM's start-up lines stay out of the replay's output.
"""

import logging
import os

if os.environ.get("LAMPS_VLLM_LOGS") == "0":
    logging.getLogger("vllm").setLevel(logging.ERROR)
