#pragma once
// What the engine and its running batch look like right now: the input of every waste and
// score formula. The token budget is the scheduler's own (vLLM's max_num_batched_tokens), so
// the formulas follow the engine they run in instead of a constant.
#include <string>

#include "lamps/errors.hpp"
#include "lamps/limits.hpp"

namespace lamps {

struct BatchState {
  // Tokens the scheduler may process in one iteration (S).
  double token_budget = 1.0;
  // Tokens the running requests need every iteration: their decodes. Prefill chunks are
  // transient and left out, or one long prefill would make every rebuild look unaffordable.
  double running_tokens_per_iteration = 0.0;
  // KV tokens held by the running requests.
  double running_context_tokens = 0.0;
  // Fraction of a discarded context the prefix cache is expected to still hold at resume.
  double prefix_cache_hit_fraction = 0.0;
  // Measured seconds of a decode iteration of this batch; 0: the cost model's estimate.
  double iteration_seconds = 0.0;
  // Link seconds of the copies already queued or in flight, out plus in: how long a new
  // swap-out now, and its swap-in at resume, would wait behind them.
  double swap_queue_seconds = 0.0;

  static BatchState checked(double token_budget, double running_tokens_per_iteration,
                            double running_context_tokens, double prefix_cache_hit_fraction,
                            double iteration_seconds, double swap_queue_seconds) {
    require_non_negative(token_budget, "token_budget");
    if (token_budget < 1.0 || token_budget > kMaxTokens) {
      throw std::invalid_argument("token_budget must be in [1, 2^53] (got " +
                                  describe(token_budget) + ")");
    }
    require_non_negative(running_tokens_per_iteration, "running_tokens_per_iteration");
    require_non_negative(running_context_tokens, "running_context_tokens");
    require_non_negative(prefix_cache_hit_fraction, "prefix_cache_hit_fraction");
    if (prefix_cache_hit_fraction > 1.0) {
      throw std::invalid_argument("prefix_cache_hit_fraction must be <= 1 (got " +
                                  describe(prefix_cache_hit_fraction) + ")");
    }
    require_non_negative(iteration_seconds, "iteration_seconds");
    require_non_negative(swap_queue_seconds, "swap_queue_seconds");
    return BatchState{token_budget,           running_tokens_per_iteration,
                      running_context_tokens, prefix_cache_hit_fraction,
                      iteration_seconds,      swap_queue_seconds};
  }
};

}  // namespace lamps
