"""InferCept's own cost model: its waste formulas, swap allowances and profiled constants.

Everything here is InferCept's code (`WukLab/InferCept`, `vllm/core/scheduler_v2.py`, the
one commit stored: f9b2195), restated, not LAMPS' core (`csrc/include/lamps/waste.hpp`), whose
formulas differ in the last chunk and in what they count as the batch:

- Discard waste, `discard_waste` (scheduler_v2.py 591-607): chunk budget
  `c_h = max(mlimit - running_batch, 1)` with `running_batch` the tokens the running requests
  still have to compute (their `inflight_length`, 1 per decoding request);
  `n = max(ceil(tokens / c_h) - 1, 0)`;
  `w_d = f_s * n(n+1)/2 * c_h + f_ch * n * running_tokens + f_last * (running_tokens + last)`
  with `f_s = (a*mlimit + c)/1000`, `f_ch = a*c_h/1000`, `f_last = a*last/1000`,
  `last = tokens mod c_h` and `running_tokens` the running requests' GPU blocks in tokens.
  `tokens` is the paused request's GPU blocks in tokens (scheduler_v2.py 636-640).
- Preserve waste (scheduler_v2.py 638): remaining API time x GPU blocks x block size. The
  remaining time is `api_exec_time - (now - api_call_time)` (vllm/sequence.py 406-407), not
  clamped: an overdue call has a negative `w_p` and is never a discard candidate.
- Per-iteration allowances (scheduler_v2.py 732-746): with `free` the free GPU tokens at the
  start of the iteration (scheduler_v2.py 760-761), `t_sin = c*(a*mlimit + b) + free/2` and
  `t_sout = c*((1+a)*mlimit + b) - free/2` tokens, `c = 1`; in blocks, `max(0, t // block)`.
- `mlimit` is the token budget of an iteration (`batch_max_tokens`, scheduler_v2.py 741-745),
  384 in InferCept's runs. It is an engine setting, the same for every policy compared: here
  it is the scheduler's own budget (vLLM's `max_num_batched_tokens`), passed in as `budget`;
  the replay's `paper` engine settings give every policy 384.
- Constants: the repository's defaults are the 13B TP2 profile (scheduler_v2.py 598-599,
  738-739); its benchmark scripts patch them per model: GPT-J-6B `exps/6B_bench.sh` lines 4-7
  (`t_sin a = 0.00462`, `b = 108.99`, `f_ch a = 0.0463`, `c = 10`), Vicuna-13B TP2
  `exps/13B_tp2_bench.sh` lines 4-7 (`-0.3297119141`, `93.994140625`, `0.0279`, `15.4`).
  `a` and `c` are ms per token and ms; `t_sin`/`t_sout` are tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class InferCeptConstants:
    """One model's profiled constants, as InferCept's benchmark scripts set them."""

    f_a_ms: float  # "replace f_ch a": ms per token of an iteration
    f_c_ms: float  # "replace f_ch c": ms of an iteration's fixed cost
    swap_a: float  # "replace t_sin"
    swap_b: float  # "replace t_offset"
    swap_c: float = 1.0


GPTJ_6B = InferCeptConstants(0.0463, 10.0, 0.00462, 108.99)
"""exps/6B_bench.sh lines 4-7."""

VICUNA_13B_TP2 = InferCeptConstants(0.0279, 15.4, -0.3297119141, 93.994140625)
"""exps/13B_tp2_bench.sh lines 4-7 (also scheduler_v2.py's defaults, 598-599 and 738-739)."""

CONSTANTS: dict[str, InferCeptConstants] = {
    "gptj-6b-a100": GPTJ_6B,
    "infercept-gptj-6b-a100": GPTJ_6B,
    "vicuna-13b-2xa100": VICUNA_13B_TP2,
}
"""InferCept's constants by model, keyed by the core's cost-model profiles
(``lamps.CostModel.profiles()``, the one registry; a test checks every key is one). A profile
not here takes its iteration constants from the core's fit (``infercept.constants_from_config``)."""


def constants_for(profile: str) -> InferCeptConstants:
    """InferCept's constants for a profile; ValueError naming the known ones otherwise."""
    try:
        return CONSTANTS[profile]
    except KeyError:
        raise ValueError(
            f"InferCept has no profiled constants for {profile!r}; known: {sorted(CONSTANTS)}"
        ) from None


def discard_waste(
    tokens: int, running_batch: int, running_tokens: int, k: InferCeptConstants, budget: int
) -> float:
    """`w_d` of recomputing `tokens` (GPU blocks x block size) beside the running batch, with
    `budget` tokens per iteration (InferCept's `mlimit`)."""
    c_h = max(budget - running_batch, 1)
    n = max((tokens + c_h - 1) // c_h - 1, 0)
    f_ch = k.f_a_ms * c_h / 1000.0
    f_s = (k.f_a_ms * budget + k.f_c_ms) / 1000.0
    w_d = f_s * (1 + n) * n / 2 * c_h + f_ch * n * running_tokens
    last = tokens % c_h
    f_last = k.f_a_ms * max(0, last) / 1000.0
    return w_d + f_last * (running_tokens + last)


def preserve_waste(remaining_seconds: float, tokens: int) -> float:
    """`w_p`: the remaining API time (negative once overdue) times the GPU tokens held."""
    return remaining_seconds * tokens


def swap_allowances(free_tokens: int, k: InferCeptConstants, budget: int) -> tuple[float, float]:
    """(`t_sout`, `t_sin`) in tokens for an iteration that starts with `free_tokens` free and
    may process `budget` tokens (InferCept's `mlimit`)."""
    t_sin = k.swap_c * (k.swap_a * budget + k.swap_b) + free_tokens / 2
    t_sout = k.swap_c * ((1 + k.swap_a) * budget + k.swap_b) - free_tokens / 2
    return t_sout, t_sin


def allowance_blocks(tokens: float, block_size: int) -> int:
    """An allowance in whole blocks, as InferCept rounds it (`max(0, t // block_size)`)."""
    return max(0, math.floor(tokens / block_size))
