#pragma once
// What the running batch looks like right now: the input of every waste and score formula.
#include "lamps/errors.hpp"

namespace lamps {

struct BatchState {
  // Tokens the running requests schedule per iteration (decodes plus prefill chunks).
  double running_tokens_per_iteration = 0.0;
  // KV tokens held by the running requests.
  double running_context_tokens = 0.0;
  // Fraction of a discarded context the prefix cache is expected to still hold at resume.
  double prefix_cache_hit_fraction = 0.0;

  static BatchState checked(double running_tokens_per_iteration, double running_context_tokens,
                            double prefix_cache_hit_fraction) {
    require_non_negative(running_tokens_per_iteration, "running_tokens_per_iteration");
    require_non_negative(running_context_tokens, "running_context_tokens");
    require_non_negative(prefix_cache_hit_fraction, "prefix_cache_hit_fraction");
    if (prefix_cache_hit_fraction > 1.0) {
      throw std::invalid_argument("prefix_cache_hit_fraction must be <= 1 (got " +
                                  describe(prefix_cache_hit_fraction) + ")");
    }
    return BatchState{running_tokens_per_iteration, running_context_tokens,
                      prefix_cache_hit_fraction};
  }
};

}  // namespace lamps
