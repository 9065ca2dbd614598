"""LAMPS over the OpenAI API: a session's finished turn parked until its next request.

- `parking`: `SessionParking`, which decides what happens to a parked turn (pinned on the GPU,
  left to the prefix cache, or copied to host memory) and ranks a session's next request;
- `pins`: the pins that keep a parked turn's blocks, bounded, released under pressure;
- `state`: what is remembered of a session (its history and its parked turn).
"""

from lamps.vllm.sessions.parking import SessionParking

__all__ = ["SessionParking"]
