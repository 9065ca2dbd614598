"""Replay of augmented-LLM workloads through vLLM's real scheduler on a simulated GPU clock."""
