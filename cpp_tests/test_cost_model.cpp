#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "lamps/cost_model.hpp"

namespace {

TEST(CostModel, GptjProfileMatchesThePaperCoefficients) {
  const lamps::CostModel model = lamps::profile("gptj-6b-a100");
  EXPECT_DOUBLE_EQ(model.a_ms_per_token(), 0.0408);
  EXPECT_DOUBLE_EQ(model.c_ms(), 16.92);
  EXPECT_EQ(model.saturation_tokens(), 384);
  // 28 layers x (K,V) x 4096 x fp16.
  EXPECT_DOUBLE_EQ(model.kv_bytes_per_token(), 458752.0);
  EXPECT_NEAR(model.iteration_seconds(384), (0.0408 * 384 + 16.92) / 1000.0, 1e-15);
}

TEST(CostModel, SwapTimeIsBytesOverBandwidth) {
  const lamps::CostModel model(0.04, 10.0, 1000.0, 1e6, 384, "toy");
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
  EXPECT_NE(message([&] { lamps::CostModel(nan, 1, 1, 1, 1, "x"); }).find("a_ms_per_token"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, -1, 1, 1, 1, "x"); }).find("c_ms"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, 1, 0, 1, 1, "x"); }).find("kv_bytes_per_token"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, 1, 1, INFINITY, 1, "x"); }).find("link_bytes_per_second"), std::string::npos);
  EXPECT_NE(message([&] { lamps::CostModel(1, 1, 1, 1, 0, "x"); }).find("saturation_tokens"), std::string::npos);
}

}  // namespace
