#pragma once
// The core's numeric domain: which inputs are in range, and how results saturate instead of
// overflowing (to infinity for a double, to undefined behaviour for a double cast to an integer).
//
// In range: token counts in [0, kMaxTokens] (every one exact in a double; the vLLM plug-in
// clamps its predictions below it) and finite seconds. CostModel refuses coefficients for which
// an in-range request could score or waste more than kMaxScore (cost_model.hpp), so in-range
// results are finite without saturating. Finite inputs out of that range (a 1e300-second API
// call, a 1e300-token context) saturate at kMaxScore: scores and wastes are always finite, and
// a ranking queue accepts every score.
#include <cmath>
#include <cstdint>
#include <limits>

namespace lamps {

// 2^53: the largest token count an in-range input may have.
constexpr double kMaxTokens = 9007199254740992.0;

// The largest score or waste (token-seconds) the core reports.
constexpr double kMaxScore = std::numeric_limits<double>::max();

// How far below kMaxScore one term of an in-range score must stay: a score sums many terms, and
// a request's context grows past kMaxTokens over its segments (the area grows with its square).
constexpr double kScoreHeadroom = 4294967296.0;  // 2^32
constexpr double kMaxTermTokenSeconds = kMaxScore / kScoreHeadroom;

// A score or waste clamped to kMaxScore: +inf and NaN (from inf * 0 on absurd inputs) saturate.
inline double saturate(double token_seconds) {
  return token_seconds < kMaxScore ? token_seconds : kMaxScore;
}

// floor(x) as a count of things: clamped to [0, INT64_MAX], NaN counts as 0. 2^63 is the first
// double past INT64_MAX, so every x below it converts exactly.
inline std::int64_t floor_to_count(double x) {
  constexpr double kTwoTo63 = 9223372036854775808.0;
  if (!(x > 0.0)) return 0;
  if (x >= kTwoTo63) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(std::floor(x));
}

}  // namespace lamps
