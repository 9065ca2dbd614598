#pragma once
// Re-scoring thousands of requests in one call, from column arrays (structure of arrays) that
// the caller keeps up to date, because the live batch state changes every iteration.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "lamps/score.hpp"

namespace lamps {

// Request i owns segments [segment_offsets[i], segment_offsets[i+1]) of the segment columns.
// strategy: -1 = choose at scoring time, else a Strategy value.
struct RequestColumns {
  const std::int64_t* context_tokens;
  const std::int64_t* pending_prefill_tokens;
  const std::int64_t* segment_offsets;  // size requests + 1
  std::size_t requests;
};

struct SegmentColumns {
  const std::int64_t* output_tokens;
  const double* api_seconds;
  const std::int64_t* return_tokens;
  const std::int8_t* strategy;
  const double* repeat;  // nullptr: every segment once
  std::size_t segments;
};

namespace detail {

[[noreturn]] inline void bad_element(const char* column, std::size_t index, const std::string& why) {
  throw std::invalid_argument(std::string(column) + "[" + std::to_string(index) + "] " + why);
}

inline Segment segment_at(const SegmentColumns& columns, std::size_t j) {
  const std::int64_t output = columns.output_tokens[j];
  const double api = columns.api_seconds[j];
  const std::int64_t returned = columns.return_tokens[j];
  const std::int8_t code = columns.strategy[j];
  if (output < 0) bad_element("output_tokens", j, "must be >= 0 (got " + std::to_string(output) + ")");
  if (!std::isfinite(api) || api < 0.0) {
    bad_element("api_seconds", j, "must be finite and >= 0 (got " + describe(api) + ")");
  }
  if (returned < 0) {
    bad_element("return_tokens", j, "must be >= 0 (got " + std::to_string(returned) + ")");
  }
  if (code < -1 || code > 2) {
    bad_element("strategy", j, "must be -1 (choose), 0, 1 or 2 (got " + std::to_string(code) + ")");
  }
  const double repeat = columns.repeat != nullptr ? columns.repeat[j] : 1.0;
  if (!std::isfinite(repeat) || repeat < 0.0) {
    bad_element("repeat", j, "must be finite and >= 0 (got " + describe(repeat) + ")");
  }
  std::optional<Strategy> strategy;
  if (code >= 0) strategy = static_cast<Strategy>(code);
  return Segment{static_cast<double>(output), api, static_cast<double>(returned), strategy,
                 repeat};
}

}  // namespace detail

// Writes one score per request into `out` (size requests). A request may have any number
// of segments; 1-3 is typical.
inline void score_batch(const RequestColumns& requests, const SegmentColumns& segments,
                        const BatchState& batch, const CostModel& cost, bool allow_swap,
                        double* out) {
  const WasteModel model(batch, cost);
  for (std::size_t i = 0; i < requests.requests; ++i) {
    const std::int64_t begin = requests.segment_offsets[i];
    const std::int64_t end = requests.segment_offsets[i + 1];
    if (begin < 0 || end < begin || static_cast<std::size_t>(end) > segments.segments) {
      detail::bad_element("segment_offsets", i + 1,
                          "must be non-decreasing and <= " + std::to_string(segments.segments) +
                              " (got " + std::to_string(begin) + ".." + std::to_string(end) + ")");
    }
    const std::int64_t context = requests.context_tokens[i];
    const std::int64_t pending = requests.pending_prefill_tokens[i];
    if (context < 0 || pending < 0 || pending > context) {
      detail::bad_element("pending_prefill_tokens", i,
                          "must satisfy 0 <= pending_prefill_tokens <= context_tokens (got " +
                              std::to_string(pending) + ", context " + std::to_string(context) + ")");
    }
    ScoreAccumulator score(static_cast<double>(context), static_cast<double>(pending), model);
    for (std::int64_t j = begin; j < end; ++j) {
      score.add(detail::segment_at(segments, static_cast<std::size_t>(j)), allow_swap);
    }
    out[i] = score.area();
  }
}

}  // namespace lamps
