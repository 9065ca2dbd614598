"""The pause mechanism every scheduler here stands on: what is done to a paused request's KV.

LAMPS (`lamps.vllm`), the baselines (`lamps.baselines`) and HTTP sessions decide *what* to do
with a request paused in an API call; this layer does it against vLLM, and imports nothing
from those above it.

- `compat`: vLLM 0.32-0.34 compatibility, the only module naming vLLM's private members
  (`PRIVATE_MEMBERS`, checked by the contract test), and `SchedulerHooks`;
- `pausing`: `KvPauses`, which releases, swaps, restores and pins a paused request's KV;
- `paused_queue`: waiting queues that set paused requests aside until their next input;
- `hints`: the per-request hints (tool, call time, calls left) and their validation;
- `capabilities`: what a KV connector declares it offers the pauses (swap, session turns);
- `stats_channel`: how LAMPS' counts ride vLLM's `SchedulerStats` to the front end.
"""
