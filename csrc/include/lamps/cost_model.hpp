#pragma once
// Iteration-time and transfer-time model of one serving deployment (model + GPU + link).
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lamps/errors.hpp"
#include "lamps/limits.hpp"

namespace lamps {

// The largest coefficients CostModel accepts: those for which every term of an in-range score
// or waste stays below kMaxTermTokenSeconds (limits.hpp), so that in-range results are finite.
// A term holds at most about kMaxTokens^2 tokens, for an iteration of up to kMaxTokens tokens,
// (a*T + c) ms, or for a swap of up to kMaxTokens tokens, T * kv / link s. Larger coefficients
// (c_ms = 1e307: an iteration of 3e296 years) would saturate every score, ranking nothing.
constexpr double kMaxAMsPerToken =
    kMaxTermTokenSeconds / (1e-3 * kMaxTokens * kMaxTokens * kMaxTokens);  // ~5.7e253
constexpr double kMaxCMs = kMaxTermTokenSeconds / (1e-3 * kMaxTokens * kMaxTokens);  // ~5.2e269
constexpr double kMaxSwapSecondsPerToken =
    kMaxTermTokenSeconds / (kMaxTokens * kMaxTokens * kMaxTokens);  // ~5.7e250

// T_fwd(n) = a*n + c milliseconds for an engine iteration that processes n tokens, and a swap
// transfer time of n tokens over the host link. `saturation_tokens` is the per-iteration token
// budget S beyond which the GPU is compute-bound (384 in the LAMPS authors' code), at most
// kMaxTokens. Coefficients are bounded by kMaxAMsPerToken, kMaxCMs and kMaxSwapSecondsPerToken.
class CostModel {
 public:
  CostModel(double a_ms_per_token, double c_ms, double kv_bytes_per_token,
            double link_bytes_per_second, std::int64_t saturation_tokens, std::string name)
      : a_ms_per_token_(
            finite_scores(require_positive(a_ms_per_token, "a_ms_per_token"), kMaxAMsPerToken,
                          "a_ms_per_token")),
        c_ms_(finite_scores(require_non_negative(c_ms, "c_ms"), kMaxCMs, "c_ms")),
        kv_bytes_per_token_(require_positive(kv_bytes_per_token, "kv_bytes_per_token")),
        link_bytes_per_second_(require_positive(link_bytes_per_second, "link_bytes_per_second")),
        saturation_tokens_(checked_saturation(saturation_tokens)),
        name_(std::move(name)) {
    finite_scores(kv_bytes_per_token_ / link_bytes_per_second_, kMaxSwapSecondsPerToken,
                  "kv_bytes_per_token / link_bytes_per_second");
  }

  double a_ms_per_token() const { return a_ms_per_token_; }
  double c_ms() const { return c_ms_; }
  double kv_bytes_per_token() const { return kv_bytes_per_token_; }
  double link_bytes_per_second() const { return link_bytes_per_second_; }
  std::int64_t saturation_tokens() const { return saturation_tokens_; }
  const std::string& name() const { return name_; }

  // Seconds of one engine iteration processing `tokens` tokens.
  double iteration_seconds(double tokens) const { return (a_ms_per_token_ * tokens + c_ms_) * 1e-3; }

  // Extra seconds an iteration takes per additional token it processes.
  double seconds_per_token() const { return a_ms_per_token_ * 1e-3; }

  // Seconds to move `tokens` tokens of KV cache one way over the host link.
  double swap_seconds(double tokens) const {
    return tokens * kv_bytes_per_token_ / link_bytes_per_second_;
  }

 private:
  static std::int64_t checked_saturation(std::int64_t tokens) {
    if (tokens < 1 || tokens > static_cast<std::int64_t>(kMaxTokens)) {
      throw std::invalid_argument("saturation_tokens must be in [1, 2^53] (got " +
                                  std::to_string(tokens) + ")");
    }
    return tokens;
  }

  static double finite_scores(double value, double maximum, const char* field) {
    if (!(value <= maximum)) {
      throw std::invalid_argument(std::string(field) + " must be <= " + describe(maximum) +
                                  " for scores to stay finite (got " + describe(value) + ")");
    }
    return value;
  }

  double a_ms_per_token_;
  double c_ms_;
  double kv_bytes_per_token_;
  double link_bytes_per_second_;
  std::int64_t saturation_tokens_;
  std::string name_;
};

// KV bytes per token of a decoder: K and V, per layer, per KV head dimension, fp16.
constexpr double kv_bytes_per_token(int layers, int kv_hidden, int bytes_per_value = 2) {
  return 2.0 * layers * kv_hidden * bytes_per_value;
}

// The profiles the paper and InferCept measured. Link bandwidth: the ~25 GB/s that pinned
// host copies reach on PCIe 4.0 x16 (A100); tensor parallelism splits the KV over 2 links.
inline std::vector<CostModel> builtin_profiles() {
  return {
      CostModel(0.0408, 16.92, kv_bytes_per_token(28, 4096), 25e9, 384, "gptj-6b-a100"),
      CostModel(0.0463, 10.0, kv_bytes_per_token(28, 4096), 25e9, 384, "infercept-gptj-6b-a100"),
      CostModel(0.0279, 15.4, kv_bytes_per_token(40, 5120), 50e9, 384, "vicuna-13b-2xa100"),
  };
}

inline std::vector<std::string> profile_names() {
  std::vector<std::string> names;
  for (const CostModel& model : builtin_profiles()) names.push_back(model.name());
  return names;
}

inline CostModel profile(const std::string& name) {
  for (CostModel& model : builtin_profiles()) {
    if (model.name() == name) return model;
  }
  std::string known;
  for (const std::string& n : profile_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown cost-model profile '" + name + "' (known: " + known + ")");
}

}  // namespace lamps
