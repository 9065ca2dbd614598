#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "lamps/score.hpp"
#include "lamps/score_batch.hpp"

namespace {

// The toy engine's batch: `budget` tokens per step (10 unless said), `run` decode tokens,
// `context` tokens held by the running requests.
lamps::BatchState toy_batch(double run = 0.0, double context = 0.0, double hit = 0.0,
                            double budget = 10.0) {
  return lamps::BatchState{budget, run, context, hit, 0.0, 0.0};
}

const lamps::CostModel kToy(1.0, 0.0, 100.0, 1e5, 0.0, 0.0, "toy");

TEST(Score, RequestWithoutApiCallsIsMemoryTimesTime) {
  // Fully prefilled context of 100, 10 more tokens at T_fwd(0 + 1) = 1 ms each.
  const lamps::Segment last{10, 0, 0, std::nullopt};
  EXPECT_NEAR(lamps::score_request(100, 0, &last, 1, toy_batch(), kToy, true), (100 + 5) * 10 * 0.001, 1e-12);
}

TEST(Score, PreservedCallAddsContextTimesDuration) {
  const std::vector<lamps::Segment> segments = {{10, 2.0, 0, lamps::Strategy::Preserve},
                                                {10, 0, 0, std::nullopt}};
  const double decode = (100 + 5) * 10 * 0.001 + (110 + 5) * 10 * 0.001;
  EXPECT_NEAR(lamps::score_request(100, 0, segments.data(), 2, toy_batch(), kToy, true), decode + 110 * 2.0,
              1e-12);
}

TEST(Score, DiscardedCallPaysTheRebuildInstead) {
  const std::vector<lamps::Segment> segments = {{10, 2.0, 0, lamps::Strategy::Discard},
                                                {10, 0, 0, std::nullopt}};
  const double decode = (100 + 5) * 10 * 0.001 + (110 + 5) * 10 * 0.001;
  const double rebuild = lamps::rebuild_area(0, 110, toy_batch(), kToy);
  EXPECT_NEAR(lamps::score_request(100, 0, segments.data(), 2, toy_batch(), kToy, true), decode + rebuild,
              1e-12);
}

TEST(Score, ALongPreservedCallRanksBehindALongerPlainRequest) {
  // The paper's point: a short request pinning memory through a long call holds more
  // memory over time than a longer request without one.
  const std::vector<lamps::Segment> short_with_call = {{5, 30.0, 0, lamps::Strategy::Preserve},
                                                       {5, 0, 0, std::nullopt}};
  const lamps::Segment long_plain{200, 0, 0, std::nullopt};
  EXPECT_GT(lamps::score_request(500, 0, short_with_call.data(), 2, toy_batch(), kToy, true),
            lamps::score_request(500, 0, &long_plain, 1, toy_batch(), kToy, true));
}

// Regression: finite inputs gave infinite scores (and wastes), which the ranking queue then
// refused. They saturate at the largest finite double instead.
TEST(Score, SaturatesAtTheLargestFiniteDoubleInsteadOfOverflowing) {
  constexpr double kMax = std::numeric_limits<double>::max();
  const lamps::CostModel gptj = lamps::profile("gptj-6b-a100");
  const double t = 9007199254740992.0;  // 2^53 tokens
  const lamps::BatchState batch = toy_batch(1e15, 1e15, 0.0);
  const lamps::Segment year_long_call{t, 1e300, t, lamps::Strategy::Preserve};
  EXPECT_EQ(lamps::score_request(t, 0, &year_long_call, 1, batch, gptj, true), kMax);
  // Left to choose, LAMPS discards rather than hold 2^54 tokens for 1e300 s: finite, not capped.
  const lamps::Segment chosen{t, 1e300, t, std::nullopt};
  EXPECT_LT(lamps::score_request(t, 0, &chosen, 1, batch, gptj, true), kMax);
  EXPECT_EQ(lamps::preserve_waste({t, 0, 1e300}, batch, gptj), kMax);
  EXPECT_EQ(lamps::discard_waste({1e300, 0, 1.0}, toy_batch(0.0, 1e300, 0.0), gptj), kMax);
  EXPECT_EQ(lamps::swap_waste({1e300, 0, 1.0}, batch, gptj), kMax);

  const std::int64_t huge = std::int64_t{1} << 62;
  const std::vector<std::int64_t> context = {huge}, pending = {huge}, offsets = {0, 1};
  const std::vector<std::int64_t> output = {huge}, returned = {huge};
  const std::vector<double> api = {1e300};
  const std::vector<std::int8_t> strategy = {0};  // preserve
  double out = 0;
  lamps::score_batch({context.data(), pending.data(), offsets.data(), 1},
                     {output.data(), api.data(), returned.data(), strategy.data(), nullptr, 1}, batch, gptj,
                     true, &out);
  EXPECT_EQ(out, kMax);
}

// The coefficient bounds keep in-range requests (tokens up to 2^53, a few segments) far from
// saturation even at the largest coefficients CostModel accepts.
TEST(Score, InRangeRequestsStayFiniteAtTheLargestAcceptedCoefficients) {
  const double t = lamps::kMaxTokens;
  const lamps::CostModel largest(lamps::kMaxAMsPerToken, lamps::kMaxCMs,
                                 lamps::kMaxSwapSecondsPerToken, 1.0, 0.0, 0.0, "largest");
  const lamps::BatchState batch = toy_batch(t, t, 0.5, t);
  for (const auto strategy : {lamps::Strategy::Preserve, lamps::Strategy::Discard,
                              lamps::Strategy::Swap}) {
    const std::vector<lamps::Segment> segments = {
        {t, 1.0, t, strategy}, {t, 1.0, t, std::nullopt}, {t, 0.0, 0.0, std::nullopt}};
    const double score = lamps::score_request(t, t, segments.data(), 3, batch, largest, true);
    EXPECT_LT(score, lamps::kMaxScore / 1e6) << static_cast<int>(strategy);
    EXPECT_LT(lamps::swap_waste({t, 0, 1.0}, batch, largest), lamps::kMaxScore / 1e6);
    EXPECT_LT(lamps::discard_waste({t, 0, 1.0}, batch, largest), lamps::kMaxScore / 1e6);
  }
  EXPECT_THROW(lamps::CostModel(lamps::kMaxAMsPerToken * 1.01, 0, 1, 1, 0.0, 0.0, "x"),
               std::invalid_argument);
  EXPECT_THROW(lamps::CostModel(1, lamps::kMaxCMs * 1.01, 1, 1, 0.0, 0.0, "x"), std::invalid_argument);
  EXPECT_THROW(lamps::CostModel(1, 0, lamps::kMaxSwapSecondsPerToken * 1.01, 1, 0.0, 0.0, "x"),
               std::invalid_argument);
}

TEST(Score, RepeatedSegmentEqualsTheSegmentsWrittenOutForLinearTerms) {
  // Preserved calls: every term is linear in the context, so k at the mean context is exact.
  const lamps::Segment once{10, 4.0, 6, lamps::Strategy::Preserve, 3.0};
  const std::vector<lamps::Segment> three(3, lamps::Segment{10, 4.0, 6, lamps::Strategy::Preserve});
  EXPECT_NEAR(lamps::score_request(100, 0, &once, 1, toy_batch(), kToy, true),
              lamps::score_request(100, 0, three.data(), 3, toy_batch(), kToy, true), 1e-9);
  const lamps::Segment none{10, 4.0, 6, std::nullopt, 0.0};
  EXPECT_EQ(lamps::score_request(100, 0, &none, 1, toy_batch(), kToy, true), 0.0);
}

TEST(ScoreBatch, MatchesScoreRequestPerRequest) {
  const std::vector<std::int64_t> context = {100, 50, 7};
  const std::vector<std::int64_t> pending = {0, 50, 7};
  const std::vector<std::int64_t> offsets = {0, 2, 2, 3};
  const std::vector<std::int64_t> output = {10, 10, 4};
  const std::vector<double> api = {2.0, 0.0, 1.0};
  const std::vector<std::int64_t> returned = {3, 0, 8};
  const std::vector<std::int8_t> strategy = {-1, -1, 1};
  const lamps::BatchState batch = toy_batch(6.0, 40.0, 0.25);
  std::vector<double> out(3);
  lamps::score_batch({context.data(), pending.data(), offsets.data(), 3},
                     {output.data(), api.data(), returned.data(), strategy.data(), nullptr, 3}, batch, kToy,
                     true, out.data());
  const std::vector<lamps::Segment> first = {{10, 2.0, 3, std::nullopt}, {10, 0, 0, std::nullopt}};
  const lamps::Segment third{4, 1.0, 8, lamps::Strategy::Discard};
  EXPECT_DOUBLE_EQ(out[0], lamps::score_request(100, 0, first.data(), 2, batch, kToy, true));
  EXPECT_DOUBLE_EQ(out[1], lamps::score_request(50, 50, nullptr, 0, batch, kToy, true));
  EXPECT_DOUBLE_EQ(out[2], lamps::score_request(7, 7, &third, 1, batch, kToy, true));
}

TEST(ScoreBatch, LongSegmentListsScoreLikeOneCall) {
  std::vector<lamps::Segment> segments;
  std::vector<std::int64_t> output, returned;
  std::vector<double> api;
  std::vector<std::int8_t> strategy;
  for (int i = 0; i < 40; ++i) {  // more than the 16 scored in one chunk
    segments.push_back({static_cast<double>(3 + i), 0.5 * i, static_cast<double>(i % 4), std::nullopt});
    output.push_back(3 + i);
    api.push_back(0.5 * i);
    returned.push_back(i % 4);
    strategy.push_back(-1);
  }
  const std::vector<std::int64_t> context = {64}, pending = {16}, offsets = {0, 40};
  double out = 0;
  const lamps::BatchState batch = toy_batch(100.0, 3000.0, 0.5);
  lamps::score_batch({context.data(), pending.data(), offsets.data(), 1},
                     {output.data(), api.data(), returned.data(), strategy.data(), nullptr, 40}, batch, kToy,
                     true, &out);
  EXPECT_NEAR(out, lamps::score_request(64, 16, segments.data(), 40, batch, kToy, true), 1e-9 * out);
}

TEST(ScoreBatch, BadElementNamesColumnAndIndex) {
  const std::vector<std::int64_t> context = {10}, pending = {0}, offsets = {0, 1};
  const std::vector<std::int64_t> output = {-3}, returned = {0};
  const std::vector<double> api = {0.0};
  const std::vector<std::int8_t> strategy = {-1};
  double out = 0;
  try {
    lamps::score_batch({context.data(), pending.data(), offsets.data(), 1},
                       {output.data(), api.data(), returned.data(), strategy.data(), nullptr, 1}, toy_batch(), kToy,
                       true, &out);
    FAIL() << "expected invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "output_tokens[0] must be >= 0 (got -3)");
  }
}

}  // namespace
