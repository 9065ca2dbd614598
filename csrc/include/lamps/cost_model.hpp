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

// Iteration time of an engine step and transfer time over the host link. A step that
// processes n tokens takes a*n + c ms, plus the attention its decodes and prefills compute:
// each decode reads its whole context (`kv_read_ms_per_token` per context token, memory-bound),
// and a prefill chunk of k tokens after h computed ones computes k*(h + k/2) (query, key) pairs
// (`prefill_ms_per_token_pair`, all layers). No token budget lives here: the per-step budget is
// the scheduler's, and reaches the formulas through BatchState.
// Coefficients are bounded by kMaxAMsPerToken, kMaxCMs and kMaxSwapSecondsPerToken.
class CostModel {
 public:
  CostModel(double a_ms_per_token, double c_ms, double kv_bytes_per_token,
            double link_bytes_per_second, double prefill_ms_per_token_pair,
            double kv_read_ms_per_token, std::string name)
      : a_ms_per_token_(
            finite_scores(require_positive(a_ms_per_token, "a_ms_per_token"), kMaxAMsPerToken,
                          "a_ms_per_token")),
        c_ms_(finite_scores(require_non_negative(c_ms, "c_ms"), kMaxCMs, "c_ms")),
        kv_bytes_per_token_(require_positive(kv_bytes_per_token, "kv_bytes_per_token")),
        link_bytes_per_second_(require_positive(link_bytes_per_second, "link_bytes_per_second")),
        prefill_ms_per_token_pair_(finite_scores(
            require_non_negative(prefill_ms_per_token_pair, "prefill_ms_per_token_pair"),
            kMaxAMsPerToken / kMaxTokens, "prefill_ms_per_token_pair")),
        kv_read_ms_per_token_(
            finite_scores(require_non_negative(kv_read_ms_per_token, "kv_read_ms_per_token"),
                          kMaxAMsPerToken, "kv_read_ms_per_token")),
        name_(std::move(name)) {
    finite_scores(kv_bytes_per_token_ / link_bytes_per_second_, kMaxSwapSecondsPerToken,
                  "kv_bytes_per_token / link_bytes_per_second");
  }

  double a_ms_per_token() const { return a_ms_per_token_; }
  double c_ms() const { return c_ms_; }
  double kv_bytes_per_token() const { return kv_bytes_per_token_; }
  double link_bytes_per_second() const { return link_bytes_per_second_; }
  double prefill_ms_per_token_pair() const { return prefill_ms_per_token_pair_; }
  double kv_read_ms_per_token() const { return kv_read_ms_per_token_; }
  const std::string& name() const { return name_; }

  // Seconds of the linear part of an engine iteration processing `tokens` tokens.
  double iteration_seconds(double tokens) const { return (a_ms_per_token_ * tokens + c_ms_) * 1e-3; }

  // Extra seconds an iteration takes per additional token it processes.
  double seconds_per_token() const { return a_ms_per_token_ * 1e-3; }

  // Seconds of prefill attention per (query, key) pair.
  double seconds_per_token_pair() const { return prefill_ms_per_token_pair_ * 1e-3; }

  // Seconds a decode iteration spends reading one context token's KV.
  double kv_read_seconds_per_token() const { return kv_read_ms_per_token_ * 1e-3; }

  // Seconds to move `tokens` tokens of KV cache one way over the host link.
  double swap_seconds(double tokens) const {
    return tokens * kv_bytes_per_token_ / link_bytes_per_second_;
  }

 private:
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
  double prefill_ms_per_token_pair_;
  double kv_read_ms_per_token_;
  std::string name_;
};

// KV bytes per token of a decoder: K and V, per layer, per KV head dimension, fp16.
constexpr double kv_bytes_per_token(int layers, int kv_hidden, int bytes_per_value = 2) {
  return 2.0 * layers * kv_hidden * bytes_per_value;
}

// Attention coefficients of a GPU, from the same public sources as the replay's engine model
// (lamps/replay/profiles.py): prefill attention 2.373e-7 ms per (query, key) pair per layer at
// a 4,096-wide query on an A100 (microsoft/vidur e2d00e9, data/profiling/a100/attention.csv),
// scaled by dense fp16 peak for an H100 (x 312/989); decode attention reads KV at 81% of the
// data-sheet HBM bandwidth (vidur: 1,652 of 2,039 GB/s on an A100-80GB).
constexpr double kA100PrefillMsPerPairPerLayer = 2.373e-7;
constexpr double kH100PrefillMsPerPairPerLayer = 2.373e-7 * 312.0 / 989.0;
constexpr double kKvReadEfficiency = 1652e9 / 2039e9;

constexpr double prefill_ms_per_pair(double per_layer_at_4096, int layers, int q_dim) {
  return per_layer_at_4096 * layers * q_dim / 4096.0;
}

constexpr double kv_read_ms_per_token(double kv_bytes, double hbm_bytes_per_second) {
  return 1e3 * kv_bytes / (hbm_bytes_per_second * kKvReadEfficiency);
}

// The named deployments: the one registry of scheduler cost models (the replay's GPU profiles,
// lamps/replay/profiles.py, each name one of these; InferCept's constants are keyed by them).
// Iteration fits: the LAMPS paper's GPT-J-6B/A100 (a = 0.0408 ms/token, c = 16.92 ms) and
// Vicuna-13B/2xA100 (0.0279, 15.4), InferCept's GPT-J fit (0.0463, 10). The Llama-3.1 ones have
// no published fit and take the replay's engine model: a is vidur's linear-layer slope scaled
// to the parameters on an H100, c the CPU overhead plus reading the weights. Llama-3.1-70B on
// 8 H100s (tensor parallel) adds the all-reduces: a = linear layers 0.0645 x 0.269/8 x
// 70.55/6.74 = 0.0227 plus 2 x 80 x 16,384 B x 4.78e-9 = 0.0125 ms per token; c = 2 ms of
// overhead + 7.31 ms reading the weights + 2 x 80 x 0.0347 = 5.55 ms of all-reduces; attention
// and the host links those of 8 H100s (each GPU's own link).
// Link bandwidth: the ~25 GB/s that pinned host copies reach on PCIe 4.0 x16 (A100), ~50 GB/s
// on PCIe 5.0 (H100); tensor parallelism splits the KV over one link per GPU.
inline std::vector<CostModel> builtin_profiles() {
  const double gptj_kv = kv_bytes_per_token(28, 4096);
  const double gptj_pf = prefill_ms_per_pair(kA100PrefillMsPerPairPerLayer, 28, 4096);
  const double gptj_kr = kv_read_ms_per_token(gptj_kv, 1555e9);
  const double vicuna_kv = kv_bytes_per_token(40, 5120);
  const double llama_kv = kv_bytes_per_token(32, 1024);
  const double llama70_kv = kv_bytes_per_token(80, 1024);
  return {
      CostModel(0.0408, 16.92, gptj_kv, 25e9, gptj_pf, gptj_kr, "gptj-6b-a100"),
      CostModel(0.0463, 10.0, gptj_kv, 25e9, gptj_pf, gptj_kr, "infercept-gptj-6b-a100"),
      CostModel(0.0279, 15.4, vicuna_kv, 50e9,
                prefill_ms_per_pair(kA100PrefillMsPerPairPerLayer / 2, 40, 5120),
                kv_read_ms_per_token(vicuna_kv, 2 * 1555e9), "vicuna-13b-2xa100"),
      CostModel(0.0207, 8.66, llama_kv, 50e9,
                prefill_ms_per_pair(kH100PrefillMsPerPairPerLayer, 32, 4096),
                kv_read_ms_per_token(llama_kv, 3350e9), "llama31-8b-h100"),
      CostModel(0.0352, 14.86, llama70_kv, 8 * 50e9,
                prefill_ms_per_pair(kH100PrefillMsPerPairPerLayer / 8, 80, 8192),
                kv_read_ms_per_token(llama70_kv, 8 * 3350e9), "llama31-70b-8xh100"),
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
