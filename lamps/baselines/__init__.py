"""The schedulers LAMPS is compared with, as vLLM scheduler classes on the same pause mechanism."""
