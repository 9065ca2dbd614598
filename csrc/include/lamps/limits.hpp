#pragma once
// The core's numeric domain: how results that do not fit their type saturate instead of
// overflowing (undefined behaviour for a double cast to an integer).
#include <cmath>
#include <cstdint>
#include <limits>

namespace lamps {

// floor(x) as a count of things: clamped to [0, INT64_MAX], NaN counts as 0. 2^63 is the first
// double past INT64_MAX, so every x below it converts exactly.
inline std::int64_t floor_to_count(double x) {
  constexpr double kTwoTo63 = 9223372036854775808.0;
  if (!(x > 0.0)) return 0;
  if (x >= kTwoTo63) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(std::floor(x));
}

}  // namespace lamps
