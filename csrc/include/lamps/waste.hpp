#pragma once
// Memory wasted by each way of handling a paused request's KV cache during an API call
// (InferCept's model, reused by LAMPS). Unit: token-seconds; KV bytes per token cancel out.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "lamps/batch_state.hpp"
#include "lamps/cost_model.hpp"
#include "lamps/errors.hpp"
#include "lamps/limits.hpp"

namespace lamps {

enum class Strategy : std::int8_t { Preserve = 0, Discard = 1, Swap = 2 };

struct PausedRequest {
  double context_tokens = 0.0;  // KV tokens the request holds when its call starts
  double cached_tokens = 0.0;   // of those, how many the prefix cache should still hold at resume
  double api_seconds = 0.0;     // (predicted or remaining) duration of the call

  static PausedRequest checked(double context_tokens, double cached_tokens, double api_seconds) {
    require_non_negative(context_tokens, "context_tokens");
    require_non_negative(cached_tokens, "cached_tokens");
    require_non_negative(api_seconds, "api_seconds");
    if (cached_tokens > context_tokens) {
      throw std::invalid_argument("cached_tokens must be <= context_tokens (got " +
                                  describe(cached_tokens) + " > " + describe(context_tokens) + ")");
    }
    return PausedRequest{context_tokens, cached_tokens, api_seconds};
  }
};

// ceil() for chunk counts. Without SSE4.1 (not assumed by a portable wheel) std::ceil compiles
// to a slow sequence, and it dominated batch re-scoring; truncation through int64 is exact for
// any value below 2^62, far above any token count.
inline double ceil_count(double x) {
  if (!(x < 4.611686018427388e18)) return std::ceil(x);
  const double truncated = static_cast<double>(static_cast<std::int64_t>(x));
  return truncated < x ? truncated + 1.0 : truncated;
}

// Chunked rebuild of `compute_tokens` tokens with the spare per-iteration budget
// h = max(S - running_tokens, 1) of the scheduler's budget S: n full chunks, then one last chunk
// of 1..h tokens.
struct ChunkPlan {
  double chunk_tokens;  // h
  double full_chunks;   // n = ceil(tokens / h) - 1
  double last_chunk;    // tokens - n * h
};

// The waste formulas for one live batch. The per-batch constants (spare budget, iteration
// times) are computed once here, because the scheduler evaluates thousands of requests
// against the same batch.
class WasteModel {
 public:
  WasteModel(const BatchState& batch, const CostModel& cost)
      : batch_(batch),
        cost_(cost),
        spare_tokens_(std::max(batch.token_budget - batch.running_tokens_per_iteration, 1.0)),
        chunk_iteration_seconds_(cost.iteration_seconds(batch.token_budget) +
                                 cost.kv_read_seconds_per_token() * batch.running_context_tokens),
        decode_iteration_seconds_(
            batch.iteration_seconds > 0.0
                ? batch.iteration_seconds
                : cost.iteration_seconds(batch.running_tokens_per_iteration + 1.0) +
                      cost.kv_read_seconds_per_token() * batch.running_context_tokens),
        pair_seconds_(cost.seconds_per_token_pair()),
        swap_seconds_per_token_(cost.swap_seconds(1.0)) {}

  const BatchState& batch() const { return batch_; }
  const CostModel& cost() const { return cost_; }
  // Seconds of a decode iteration of the running batch plus one request.
  double decode_iteration_seconds() const { return decode_iteration_seconds_; }
  // Seconds of an iteration that fills the budget, before its prefill attention.
  double chunk_iteration_seconds() const { return chunk_iteration_seconds_; }
  double swap_seconds(double tokens) const { return tokens * swap_seconds_per_token_; }

  ChunkPlan chunk_plan(double compute_tokens) const {
    if (compute_tokens <= 0.0) return ChunkPlan{spare_tokens_, 0.0, 0.0};
    const double full = ceil_count(compute_tokens / spare_tokens_) - 1.0;
    return ChunkPlan{spare_tokens_, full, compute_tokens - full * spare_tokens_};
  }

  // Memory held by a request while `compute_tokens` tokens are rebuilt on top of
  // `held_tokens` already in GPU memory. Full chunk j (1..n) holds held + j*h tokens for an
  // iteration of T0 + P*h*(held + (j - 1/2)*h) (T0: the budget's linear part and the batch's
  // KV reads; P: prefill attention per pair), the last chunk of l tokens the whole context
  // for T0 + P*l*(held + n*h + l/2). Closed form of the sums over j.
  double rebuild_area(double held_tokens, double compute_tokens) const {
    if (compute_tokens <= 0.0) return 0.0;
    const double h = spare_tokens_;
    const double n = ceil_count(compute_tokens / h) - 1.0;
    const double last = compute_tokens - n * h;
    const double sum_j = n * (n + 1.0) / 2.0;
    const double sum_j2 = n * (n + 1.0) * (2.0 * n + 1.0) / 6.0;
    const double linear =
        chunk_iteration_seconds_ * ((n + 1.0) * held_tokens + h * sum_j + compute_tokens);
    const double attention =
        pair_seconds_ * (h * (n * held_tokens * (held_tokens - h / 2.0) +
                              h * (2.0 * held_tokens - h / 2.0) * sum_j + h * h * sum_j2) +
                         (held_tokens + compute_tokens) * last *
                             (held_tokens + n * h + last / 2.0));
    return linear + attention;
  }

  // Extra iteration time the rebuild's chunks impose on every other running request's memory:
  // their tokens through the linear layers and their (query, key) pairs through attention.
  double rebuild_slowdown_area(double held_tokens, double compute_tokens) const {
    if (compute_tokens <= 0.0) return 0.0;
    const double pairs = compute_tokens * (held_tokens + compute_tokens / 2.0);
    return (cost_.seconds_per_token() * compute_tokens + pair_seconds_ * pairs) *
           batch_.running_context_tokens;
  }

  // Wastes saturate at kMaxScore (limits.hpp).

  // W_p: the context sits idle in GPU memory for the whole call.
  double preserve(const PausedRequest& request) const {
    return saturate(request.api_seconds * request.context_tokens);
  }

  // W_d: only the tokens the prefix cache lost are recomputed, chunked into the spare budget,
  // and every other running request is slowed by the extra tokens of each chunk.
  double discard(const PausedRequest& request) const {
    const double recompute = request.context_tokens - request.cached_tokens;
    return saturate(rebuild_area(request.cached_tokens, recompute) +
                    rebuild_slowdown_area(request.cached_tokens, recompute));
  }

  // W_s: out and back in over the link, stalling the batch's memory (the request's own
  // included), plus the request's memory held while its copies wait behind the ones queued
  // (swap_queue_seconds: the wait out now plus the wait in at resume).
  double swap(const PausedRequest& request) const {
    const double transfer = swap_seconds(request.context_tokens);
    return saturate(2.0 * transfer *
                        (batch_.running_context_tokens + request.context_tokens) +
                    batch_.swap_queue_seconds * request.context_tokens);
  }

  // LAMPS: the strategy of least waste; ties prefer Preserve, then Discard (no data movement).
  Strategy choose(const PausedRequest& request, bool allow_swap) const {
    const double preserve_waste = preserve(request);
    const double discard_waste = discard(request);
    Strategy best = discard_waste < preserve_waste ? Strategy::Discard : Strategy::Preserve;
    if (allow_swap && swap(request) < std::min(preserve_waste, discard_waste)) {
      best = Strategy::Swap;
    }
    return best;
  }

 private:
  BatchState batch_;
  const CostModel& cost_;
  double spare_tokens_;
  double chunk_iteration_seconds_;
  double decode_iteration_seconds_;
  double pair_seconds_;
  double swap_seconds_per_token_;
};

inline ChunkPlan chunk_plan(double compute_tokens, const BatchState& batch, const CostModel& cost) {
  return WasteModel(batch, cost).chunk_plan(compute_tokens);
}

inline double rebuild_area(double held_tokens, double compute_tokens, const BatchState& batch,
                           const CostModel& cost) {
  return WasteModel(batch, cost).rebuild_area(held_tokens, compute_tokens);
}

inline double preserve_waste(const PausedRequest& request, const BatchState& batch,
                             const CostModel& cost) {
  return WasteModel(batch, cost).preserve(request);
}

inline double discard_waste(const PausedRequest& request, const BatchState& batch,
                            const CostModel& cost) {
  return WasteModel(batch, cost).discard(request);
}

inline double swap_waste(const PausedRequest& request, const BatchState& batch,
                         const CostModel& cost) {
  return WasteModel(batch, cost).swap(request);
}

inline Strategy choose_strategy(const PausedRequest& request, const BatchState& batch,
                                const CostModel& cost, bool allow_swap) {
  return WasteModel(batch, cost).choose(request, allow_swap);
}

// InferCept: discard a paused request once recomputing it wastes less than keeping it for
// the *remaining* call time (request.api_seconds is the remaining time here).
inline bool infercept_should_discard(const PausedRequest& request, const BatchState& batch,
                                     const CostModel& cost) {
  const WasteModel model(batch, cost);
  return model.discard(request) < model.preserve(request);
}

// InferCept swaps only what one iteration's compute can hide: tokens movable one way in the
// time of the current iteration. Saturates at INT64_MAX (an unbounded budget).
inline std::int64_t infercept_swap_budget_tokens(const BatchState& batch, const CostModel& cost) {
  const double seconds = WasteModel(batch, cost).decode_iteration_seconds();
  return floor_to_count(seconds * cost.link_bytes_per_second() / cost.kv_bytes_per_token());
}

}  // namespace lamps
