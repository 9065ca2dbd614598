#pragma once
// The LAMPS ranking score: the area under a request's KV-memory curve over its whole remaining
// life, given how each of its API calls will be handled. Smaller area runs first.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "lamps/batch_state.hpp"
#include "lamps/cost_model.hpp"
#include "lamps/errors.hpp"
#include "lamps/limits.hpp"
#include "lamps/waste.hpp"

namespace lamps {

// One remaining segment: decode `output_tokens`, then (if it has one) an API call lasting
// `api_seconds` that appends `return_tokens` to the context. `repeat` > 1 stands for that many
// such segments in a row with these (mean) values: the predicted rest of a request whose later
// calls are known only on average; a fractional count is an expected count.
struct Segment {
  double output_tokens = 0.0;
  double api_seconds = 0.0;
  double return_tokens = 0.0;
  std::optional<Strategy> strategy;  // empty: chosen by choose_strategy when scoring
  double repeat = 1.0;

  bool has_api_call() const { return api_seconds > 0.0 || return_tokens > 0.0; }

  static Segment checked(double output_tokens, double api_seconds, double return_tokens,
                         std::optional<Strategy> strategy, double repeat = 1.0) {
    require_non_negative(output_tokens, "output_tokens");
    require_non_negative(api_seconds, "api_seconds");
    require_non_negative(return_tokens, "return_tokens");
    require_non_negative(repeat, "repeat");
    return Segment{output_tokens, api_seconds, return_tokens, strategy, repeat};
  }
};

// Decoding `output_tokens` one per iteration grows the context linearly: a trapezoid.
inline double decode_area(double context_tokens, double output_tokens, double iteration_seconds) {
  return (context_tokens + output_tokens / 2.0) * output_tokens * iteration_seconds;
}

// Memory-time spent on one API call of a request holding `context_tokens`, plus rebuilding the
// context (what the call discarded and the `return_tokens` it appended) afterwards.
inline double api_call_area(double context_tokens, const Segment& segment, Strategy strategy,
                            const WasteModel& model) {
  switch (strategy) {
    case Strategy::Preserve:
      return context_tokens * segment.api_seconds +
             model.rebuild_area(context_tokens, segment.return_tokens);
    case Strategy::Discard: {
      const double cached = context_tokens * model.batch().prefix_cache_hit_fraction;
      return model.rebuild_area(cached, context_tokens - cached + segment.return_tokens);
    }
    case Strategy::Swap:
      // Held on the GPU while copied out and while copied back in.
      return context_tokens * 2.0 * model.swap_seconds(context_tokens) +
             model.rebuild_area(context_tokens, segment.return_tokens);
  }
  throw std::invalid_argument("strategy must be PRESERVE, DISCARD or SWAP");
}

// Walks a request's remaining segments, adding each one's area as its context grows.
class ScoreAccumulator {
 public:
  // Starts with the prefill still owed: `pending_prefill_tokens` of `context_tokens`.
  ScoreAccumulator(double context_tokens, double pending_prefill_tokens, const WasteModel& model)
      : model_(model),
        context_(context_tokens),
        area_(model.rebuild_area(context_tokens - pending_prefill_tokens, pending_prefill_tokens)) {}

  // A repeated segment (`repeat` = k) adds k times the area of one at the mean context over
  // the k: exact for the terms linear in the context (decode, preserve, swap, the linear part
  // of a rebuild), and one strategy choice instead of k. The context grows by k times one's.
  void add(const Segment& segment, bool allow_swap) {
    const double k = segment.repeat;
    if (!(k > 0.0)) return;
    const double growth = segment.output_tokens + (segment.has_api_call() ? segment.return_tokens : 0.0);
    const double start = context_ + (k - 1.0) / 2.0 * growth;
    double area = decode_area(start, segment.output_tokens, model_.decode_iteration_seconds());
    if (segment.has_api_call()) {
      const double at_call = start + segment.output_tokens;
      const Strategy strategy =
          segment.strategy
              ? *segment.strategy
              : model_.choose(PausedRequest{at_call,
                                            at_call * model_.batch().prefix_cache_hit_fraction,
                                            segment.api_seconds},
                              allow_swap);
      area += api_call_area(at_call, segment, strategy, model_);
    }
    area_ += k == 1.0 ? area : k * area;
    context_ += k * growth;
  }

  // Saturates at kMaxScore (limits.hpp).
  double area() const { return saturate(area_); }

 private:
  const WasteModel& model_;
  double context_;
  double area_;
};

// Score of a request holding `context_tokens` (of which `pending_prefill_tokens` are not computed
// yet) with `count` remaining segments. Requests without API calls reduce to memory x time, so
// both kinds compete fairly in one queue. Always finite: saturates at kMaxScore.
inline double score_request(double context_tokens, double pending_prefill_tokens,
                            const Segment* segments, std::size_t count, const WasteModel& model,
                            bool allow_swap) {
  ScoreAccumulator score(context_tokens, pending_prefill_tokens, model);
  for (std::size_t i = 0; i < count; ++i) score.add(segments[i], allow_swap);
  return score.area();
}

inline double score_request(double context_tokens, double pending_prefill_tokens,
                            const Segment* segments, std::size_t count, const BatchState& batch,
                            const CostModel& cost, bool allow_swap) {
  return score_request(context_tokens, pending_prefill_tokens, segments, count,
                       WasteModel(batch, cost), allow_swap);
}

inline void check_request_tokens(double context_tokens, double pending_prefill_tokens) {
  require_non_negative(context_tokens, "context_tokens");
  require_non_negative(pending_prefill_tokens, "pending_prefill_tokens");
  if (pending_prefill_tokens > context_tokens) {
    throw std::invalid_argument("pending_prefill_tokens must be <= context_tokens (got " +
                                describe(pending_prefill_tokens) + " > " +
                                describe(context_tokens) + ")");
  }
}

}  // namespace lamps
