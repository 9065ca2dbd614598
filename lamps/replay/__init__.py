"""Replay of augmented-LLM workloads through vLLM's real scheduler on a simulated GPU clock.

``lamps replay`` quiets vLLM's loggers (unless ``--vllm-logs``) before vLLM is imported, here
and in its worker processes (which import this package first), so vLLM's start-up lines stay out
of the replay's output: ``lamps.logs`` says how.
"""

from lamps.logs import apply_vllm_logs

apply_vllm_logs(quiet_unless_chosen=False)
