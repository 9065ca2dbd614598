#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <limits>
#include <stdexcept>

#include "lamps/cost_model.hpp"

namespace {

TEST(CostModel, GptjProfileMatchesThePaperCoefficients) {
  const lamps::CostModel model = lamps::profile("gptj-6b-a100");
  EXPECT_DOUBLE_EQ(model.a_ms_per_token(), 0.0408);
  EXPECT_DOUBLE_EQ(model.c_ms(), 16.92);
  // Attention: vidur's A100 prefill pairs (28 layers), KV reads at 81% of 1,555 GB/s.
  EXPECT_NEAR(model.prefill_ms_per_token_pair(), 2.373e-7 * 28, 1e-18);
  EXPECT_NEAR(model.kv_read_ms_per_token(), 1e3 * 458752 / (1555e9 * 1652 / 2039), 1e-12);
  // 28 layers x (K,V) x 4096 x fp16.
  EXPECT_DOUBLE_EQ(model.kv_bytes_per_token(), 458752.0);
  EXPECT_NEAR(model.iteration_seconds(384), (0.0408 * 384 + 16.92) / 1000.0, 1e-15);
}

TEST(CostModel, SwapTimeIsBytesOverBandwidth) {
  const lamps::CostModel model(0.04, 10.0, 1000.0, 1e6, 0.0, 0.0, "toy");
  EXPECT_DOUBLE_EQ(model.swap_seconds(500), 0.5);
}

TEST(CostModel, UnknownProfileNamesTheKnownOnes) {
  try {
    lamps::profile("gpt-5");
    FAIL() << "expected invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gptj-6b-a100"), std::string::npos);
  }
}

std::string construction_error(double a, double c, double kv, double link, double pair = 0.0,
                               double read = 0.0) {
  try {
    lamps::CostModel(a, c, kv, link, pair, read, "x");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no error";
}

// Regression: c_ms = 1e307 passed validation, then every score overflowed to infinity and the
// first request failed in the scheduler. Coefficients that cannot give finite scores for
// in-range inputs are refused up front, naming the field.
TEST(CostModel, RejectsCoefficientsThatCannotGiveFiniteScores) {
  EXPECT_NE(construction_error(0.04, 1e307, 1e5, 1e10).find("c_ms"), std::string::npos);
  EXPECT_NE(construction_error(1e300, 10, 1e5, 1e10).find("a_ms_per_token"), std::string::npos);
  // KV bytes over link bandwidth: seconds to swap one token.
  EXPECT_NE(construction_error(0.04, 10, 1e300, 1e-3).find("kv_bytes_per_token"),
            std::string::npos);
  EXPECT_NE(construction_error(0.04, 10, 1e5, 1e-300).find("link_bytes_per_second"),
            std::string::npos);
  EXPECT_NE(construction_error(0.04, 10, 1e5, 1e10, 1e250).find("prefill_ms_per_token_pair"),
            std::string::npos);
  EXPECT_NE(construction_error(0.04, 10, 1e5, 1e10, 0, 1e260).find("kv_read_ms_per_token"),
            std::string::npos);
  EXPECT_EQ(construction_error(0.04, 1e9, 1e5, 1e10, 1e-5, 1e-3), "no error");
}

TEST(CostModel, RejectsOutOfRangeCoefficientsNamingTheField) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto message = [](auto make) {
    try {
      make();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { lamps::CostModel(nan, 1, 1, 1, 0, 0, "x"); }).find("a_ms_per_token"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, -1, 1, 1, 0, 0, "x"); }).find("c_ms"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, 1, 0, 1, 0, 0, "x"); }).find("kv_bytes_per_token"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, 1, 1, INFINITY, 0, 0, "x"); }).find("link_bytes_per_second"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, 1, 1, 1, -1, 0, "x"); }).find("prefill_ms_per_token_pair"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, 1, 1, 1, 0, nan, "x"); }).find("kv_read_ms_per_token"), std::string::npos);
}

}  // namespace
