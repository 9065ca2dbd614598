"""LAMPS: memory-over-time scheduling of API-augmented LLM requests."""
