"""The ablations: LAMPS with one design choice switched, each a replay policy (``lamps-<switch>``).

Each entry maps a policy name to the ``LampsConfig`` keys it sets (``--additional-config
'{"lamps": {...}}'`` on a server) and what that means; ``lamps.replay.policies`` registers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamps.choices import Choice
from lamps.vllm.switches import Redecide, RunningOrder, ScoreHorizon, StarvationRule, SwapPolicy

ABLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "lamps-running-admission": (
        {"running_order": RunningOrder.ADMISSION},
        "running list in vLLM's admission order (the authors' way): only waiting is ranked",
    ),
    "lamps-starve-none": ({"starvation_rule": StarvationRule.NONE}, "no starvation prevention"),
    "lamps-starve-iterations": (
        {"starvation_rule": StarvationRule.ITERATIONS, "starvation_share": 1},
        "the paper's rule: promoted after 100 scheduler iterations of waiting, promoted "
        "requests always first (arrival order among them)",
    ),
    "lamps-starve-first": (
        {"starvation_share": 1},
        "promoted after 10 s of waiting (the default), but promoted requests always first",
    ),
    "lamps-starve-relative": (
        {"starvation_rule": StarvationRule.RELATIVE},
        "promote after waiting starvation_factor (4) times the predicted service time",
    ),
    "lamps-starve-authors": (
        {"starvation_rule": StarvationRule.AUTHORS, "starvation_share": 1},
        "the authors' rule: only requests that already ran count iterations waiting",
    ),
    "lamps-next-call": (
        {"score_horizon": ScoreHorizon.NEXT_CALL},
        "score one call ahead (the current turn and its call) instead of the whole life",
    ),
    "lamps-pressure-release": (
        {"release_paused_under_pressure": True},
        "under memory pressure the paused KV that wastes most to keep is discarded before vLLM "
        "preempts a running request (off by default)",
    ),
    "lamps-no-preemption-bound": (
        {"max_preemptions": 0},
        "no bound on how often one request is preempted",
    ),
    "lamps-redecide-every-step": (
        {"redecide": Redecide.EVERY_STEP},
        "every preserved pause re-decided before each step on its remaining time (InferCept)",
    ),
    "lamps-redecide-demote": (
        {"redecide": Redecide.DEMOTE},
        "pauses start preserved; all but the costliest demoted under memory pressure",
    ),
    "lamps-no-swap": ({"allow_swap": False}, "preserve or discard only (no swap)"),
    "lamps-swap-budgeted": (
        {"swap_policy": SwapPolicy.BUDGETED},
        "swap within what one iteration hides (InferCept's t_sout budget)",
    ),
    "lamps-swap-largest-first": (
        {"swap_policy": SwapPolicy.LARGEST_SAVING_FIRST},
        "the iteration's swap budget spent on the largest waste saved first",
    ),
}
"""Name -> (switches, meaning). ``lamps-no-rank`` (ranking off) and ``lamps-oracle`` (no noise)
are the other two ablations, registered with the main policies."""

STATELESS_ABLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "lamps-stateless-no-parking": (
        {"sessions": False},
        "no session parking: a finished turn is left to vLLM's prefix cache, as without LAMPS",
    ),
    "lamps-stateless-no-swap": (
        {"allow_swap": False},
        "parked turns pinned or left to the prefix cache, never copied to host memory",
    ),
    "lamps-stateless-prefix-blind": (
        {"session_prefix_aware": False},
        "a turn ranked as if it owed its whole prompt's prefill (the prefix its session's "
        "parked turn covers not counted)",
    ),
}
"""The same over the OpenAI API (`lamps-stateless` with one switch)."""


def plain(switches: Mapping[str, Any]) -> dict[str, Any]:
    """The switches with each choice as its value (as a config file spells them)."""
    return {k: v.value if isinstance(v, Choice) else v for k, v in switches.items()}
