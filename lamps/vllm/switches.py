"""The LAMPS scheduler's design choices: the ablation switches of ``LampsConfig``.

Each switch is a ``Choice`` (a ``str`` enum): its members are the values a config names
(``additional_config``, ``LAMPS_*`` env vars, a ``LAMPS_CONFIG`` file), each with what it
means. ``LampsConfig`` converts and validates them once; the scheduler compares members.
"""

from __future__ import annotations

from lamps.choices import Choice


class RunningOrder(Choice):
    """``running_order``: the order of the running list."""

    SCORE = (
        "score",
        "the running list sorted by score before each step: token budget in score order, the "
        "victim (running[-1]) the largest score",
    )
    ADMISSION = "admission", "vLLM's order (admission, FCFS), as the authors keep it"


class StarvationRule(Choice):
    """``starvation_rule``: when a waiting request counts as starved and is promoted."""

    ITERATIONS = (
        "iterations",
        "promote after starvation_threshold scheduler iterations of waiting (the paper's rule)",
    )
    SECONDS = "seconds", "promote after starvation_seconds of waiting"
    RELATIVE = (
        "relative",
        "promote after waiting starvation_factor times the predicted service time",
    )
    AUTHORS = (
        "authors",
        "the authors' code: only requests that already ran once count iterations waiting; at "
        "starvation_threshold they are promoted",
    )
    NONE = "none", "never promote"


class ScoreHorizon(Choice):
    """``score_horizon``: how far ahead a request's score looks."""

    LIFE = (
        "life",
        "the memory a request holds over its whole remaining life: its current turn, its next "
        "call, and its predicted later calls and final answer (the paper's score)",
    )
    NEXT_CALL = "next_call", "its current turn and the call after it only (one segment ahead)"


class Redecide(Choice):
    """``redecide``: when a preserved pause is decided again."""

    OVERRUN = (
        "overrun",
        "decide at the pause; re-decide a preserved call when it outlasts its prediction",
    )
    EVERY_STEP = (
        "every_step",
        "re-decide every preserved pause before each step with its remaining predicted time "
        "(InferCept's way)",
    )
    DEMOTE = (
        "demote",
        "pauses start preserved; before each step all but the costliest pause whose class is "
        "discard or swap are released (the authors' way)",
    )


class SwapPolicy(Choice):
    """``swap_policy``: when a swap that wastes least is made."""

    UNBUDGETED = "unbudgeted", "swap whenever it is the least waste"
    BUDGETED = (
        "budgeted",
        "swap only within what one iteration's compute hides (InferCept's allowance); "
        "otherwise the next-best strategy",
    )
    LARGEST_SAVING_FIRST = (
        "largest_saving_first",
        "the iteration's allowance goes to the swaps that save the most waste; the others take "
        "their next-best strategy",
    )


SWITCHES: dict[str, type[Choice]] = {
    "running_order": RunningOrder,
    "starvation_rule": StarvationRule,
    "score_horizon": ScoreHorizon,
    "redecide": Redecide,
    "swap_policy": SwapPolicy,
}
"""``LampsConfig``'s choice-valued keys and their types (the values and what each means)."""
