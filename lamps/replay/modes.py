"""The replay's own closed choices: how a policy's requests meet the API, and which engine runs.

Both are ``Choice`` members (``str`` enums): results rows and ``lamps replay`` options spell
them as their values (``"session"``, ``"stateless"``; ``"sim"``, ``"real"``).
"""

from __future__ import annotations

from lamps.choices import Choice


class ApiMode(Choice):
    """How a policy replays API calls (``ReplayPolicy.api_mode``)."""

    SESSION = "session", "a paused streaming session: the request waits out each call"
    STATELESS = "stateless", "each turn a new request, as over the OpenAI API"


API_MODES: tuple[ApiMode, ...] = tuple(ApiMode)


class EngineKind(Choice):
    """What runs a replay (``lamps replay --engine``)."""

    SIM = "sim", "vLLM's real scheduler on a simulated GPU clock"
    REAL = "real", "a real vLLM engine on CPU (the check)"
