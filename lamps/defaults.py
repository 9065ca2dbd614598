"""Defaults shared by the scheduler plug-in, the baselines and the replay.

This module imports nothing of ``lamps``, so that every layer can read it.
"""

from __future__ import annotations

DEFAULT_PROFILE = "gptj-6b-a100"
"""The cost-model profile (a ``lamps.CostModel.profile`` name, and the replay's GPU profile)
used when none is named: GPT-J-6B on an A100, the paper's setup."""
