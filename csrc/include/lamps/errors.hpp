#pragma once
// Error types of the core. The bindings map each to one Python exception, so a caller sees
// ValueError / KeyError / IndexError naming the offending field instead of undefined behaviour.
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string>

namespace lamps {

// A handle that is not in the queue (Python: KeyError).
class UnknownHandle : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Pop or peek on an empty queue (Python: IndexError).
class EmptyQueue : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

// std::invalid_argument is used for bad values (Python: ValueError).

// The shortest text that reads back as `value` ("0.5", "-1", "1e+307").
inline std::string describe(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[32];
  const std::to_chars_result written = std::to_chars(text, text + sizeof text, value);
  return std::string(text, written.ptr);
}

inline double require_finite(double value, const char* field) {
  if (!std::isfinite(value)) {
    throw std::invalid_argument(std::string(field) + " must be finite (got " + describe(value) + ")");
  }
  return value;
}

inline double require_non_negative(double value, const char* field) {
  require_finite(value, field);
  if (value < 0.0) {
    throw std::invalid_argument(std::string(field) + " must be >= 0 (got " + describe(value) + ")");
  }
  return value;
}

inline double require_positive(double value, const char* field) {
  require_finite(value, field);
  if (value <= 0.0) {
    throw std::invalid_argument(std::string(field) + " must be > 0 (got " + describe(value) + ")");
  }
  return value;
}

}  // namespace lamps
