#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "lamps/waste.hpp"

namespace {

// The toy engine's batch: `budget` tokens per step (10 unless said), `run` decode tokens,
// `context` tokens held by the running requests.
lamps::BatchState toy_batch(double run = 0.0, double context = 0.0, double hit = 0.0,
                            double budget = 10.0) {
  return lamps::BatchState{budget, run, context, hit, 0.0, 0.0};
}

// a = 1 ms/token, c = 0, S = 10: T_fwd(S) = 10 ms, one token adds 1 ms.
const lamps::CostModel kToy(1.0, 0.0, 100.0, 1e5, 0.0, 0.0, "toy");

TEST(Waste, PreserveIsContextTimesApiTime) {
  EXPECT_DOUBLE_EQ(lamps::preserve_waste({200, 0, 3.0}, toy_batch(), kToy), 600.0);
}

TEST(Waste, DiscardChunksIntoTheSpareBudget) {
  // 6 running tokens leave h = 4 per iteration; 10 tokens = 2 full chunks + 2 tokens.
  const lamps::BatchState batch = toy_batch(6.0, 50.0, 0.0);
  const lamps::ChunkPlan plan = lamps::chunk_plan(10, batch, kToy);
  EXPECT_DOUBLE_EQ(plan.chunk_tokens, 4.0);
  EXPECT_DOUBLE_EQ(plan.full_chunks, 2.0);
  EXPECT_DOUBLE_EQ(plan.last_chunk, 2.0);
  // Memory: iterations hold 4, 8, then 10 tokens for 10 ms each = 0.22 token-s.
  // Slowdown: 10 extra tokens x 1 ms x 50 other tokens = 0.5 token-s.
  EXPECT_NEAR(lamps::discard_waste({10, 0, 5.0}, batch, kToy), 0.22 + 0.5, 1e-12);
}

// The spare budget is the scheduler's budget less the decodes, whatever the budget: no constant.
// 1,200 tokens beside 100 decodes holding 20,000 tokens, a = 0.04 ms/token, c = 10 ms.
TEST(Waste, DiscardFollowsTheSchedulersTokenBudget) {
  const lamps::CostModel cost(0.04, 10.0, 1000.0, 1e9, 0.0, 0.0, "hand");
  const double slowdown = 0.04e-3 * 1200 * 20000;
  const auto at = [&](double budget) {
    return lamps::discard_waste({1200, 0, 10.0}, toy_batch(100, 20000, 0, budget), cost);
  };
  // S = 384: h = 284, chunks 284 x 4 + 64; each holds what is built so far for 25.36 ms.
  EXPECT_NEAR(at(384), 0.02536 * (284 * 10 + 1200) + slowdown, 1e-9);
  // S = 2,048 and 8,192: one chunk of 1,200 for T(S).
  EXPECT_NEAR(at(2048), 0.09192 * 1200 + slowdown, 1e-9);
  EXPECT_NEAR(at(8192), 0.33768 * 1200 + slowdown, 1e-9);
}

TEST(Waste, RebuildPricesTheChunksAttention) {
  // Two chunks of 4 after 2 held, P = 1 ms per pair: chunk 1 has 4 x (2 + 2) = 16 pairs and
  // holds 6 tokens, chunk 2 has 4 x (6 + 2) = 32 pairs and holds 10; T0 = 10 ms each.
  const lamps::CostModel cost(1.0, 0.0, 100.0, 1e5, 1.0, 0.0, "attention");
  const lamps::BatchState batch = toy_batch(6.0, 0.0, 0.0);
  EXPECT_NEAR(lamps::rebuild_area(2, 8, batch, cost), 6 * (0.010 + 0.016) + 10 * (0.010 + 0.032),
              1e-12);
}

TEST(Waste, ChunkCountIsExactAtMultiplesAndForHugeValues) {
  EXPECT_DOUBLE_EQ(lamps::ceil_count(8.0), 8.0);
  EXPECT_DOUBLE_EQ(lamps::ceil_count(8.000001), 9.0);
  EXPECT_DOUBLE_EQ(lamps::ceil_count(0.25), 1.0);
  EXPECT_DOUBLE_EQ(lamps::ceil_count(1e300), 1e300);
  // 12 tokens in chunks of 4: two full chunks and a last chunk of 4, not three and zero.
  const lamps::ChunkPlan plan = lamps::chunk_plan(12, toy_batch(6.0, 0.0, 0.0), kToy);
  EXPECT_DOUBLE_EQ(plan.full_chunks, 2.0);
  EXPECT_DOUBLE_EQ(plan.last_chunk, 4.0);
}

TEST(Waste, DiscardOfAFullyCachedContextIsFree) {
  EXPECT_DOUBLE_EQ(lamps::discard_waste({500, 500, 5.0}, toy_batch(6.0, 50.0, 0.0), kToy), 0.0);
}

TEST(Waste, CachedTokensAreHeldWhileTheRestIsRebuilt) {
  // 4 uncached tokens in one chunk on top of 6 cached: one iteration holds 10 tokens.
  EXPECT_NEAR(lamps::discard_waste({10, 6, 5.0}, toy_batch(6.0, 0.0, 0.0), kToy), 10 * 0.010, 1e-12);
}

TEST(Waste, SaturatedBatchStillRecomputesOneTokenPerIteration) {
  const lamps::ChunkPlan plan = lamps::chunk_plan(3, toy_batch(1000.0, 0.0, 0.0), kToy);
  EXPECT_DOUBLE_EQ(plan.chunk_tokens, 1.0);
  EXPECT_DOUBLE_EQ(plan.full_chunks, 2.0);
}

TEST(Waste, SwapMovesTwiceAndStallsTheBatch) {
  // 100 tokens x 100 B / 1e5 B/s = 0.1 s one way; batch 400 + own 100 tokens.
  EXPECT_NEAR(lamps::swap_waste({100, 0, 9.0}, toy_batch(0.0, 400.0, 0.0), kToy), 2 * 0.1 * 500, 1e-12);
}

TEST(Strategy, LampsPicksTheLeastWaste) {
  const lamps::BatchState batch = toy_batch(6.0, 50.0, 0.0);
  // A short call on a big context: keeping it is cheapest.
  EXPECT_EQ(lamps::choose_strategy({1000, 0, 0.001}, batch, kToy, true), lamps::Strategy::Preserve);
  // A long call on a small context that can be rebuilt fast: discard.
  EXPECT_EQ(lamps::choose_strategy({10, 0, 60.0}, batch, kToy, true), lamps::Strategy::Discard);
  // A long call on a large context with a fast link and an idle batch: swap.
  const lamps::CostModel fast_link(1.0, 0.0, 1.0, 1e9, 0.0, 0.0, "fast");
  EXPECT_EQ(lamps::choose_strategy({5000, 0, 60.0}, toy_batch(6.0, 0.0, 0.0), fast_link, true),
            lamps::Strategy::Swap);
  EXPECT_NE(lamps::choose_strategy({5000, 0, 60.0}, toy_batch(6.0, 0.0, 0.0), fast_link, false),
            lamps::Strategy::Swap);
}

TEST(Strategy, TiesPreferPreserve) {
  // Zero-length call and fully cached context: every waste is 0 but swap's.
  EXPECT_EQ(lamps::choose_strategy({100, 100, 0.0}, toy_batch(), kToy, true), lamps::Strategy::Preserve);
}

TEST(Strategy, InferceptDiscardsOnceRecomputeIsCheaperThanTheRemainingWait) {
  const lamps::BatchState batch = toy_batch(6.0, 50.0, 0.0);
  // W_d = 0.72 (see above); W_p = 10 tokens x remaining.
  EXPECT_TRUE(lamps::infercept_should_discard({10, 0, 1.0}, batch, kToy));
  EXPECT_FALSE(lamps::infercept_should_discard({10, 0, 0.05}, batch, kToy));
}

TEST(Strategy, InferceptSwapBudgetHidesBehindOneIteration) {
  // Decode iteration of 5 running + 1 = 6 ms; 1e5 B/s x 6 ms / 100 B = 6 tokens.
  EXPECT_EQ(lamps::infercept_swap_budget_tokens(toy_batch(5.0, 0.0, 0.0), kToy), 6);
}

// Regression: the budget was a double cast to int64 unchecked (undefined behaviour; x86 gave
// INT64_MIN, "swap nothing", for the largest budgets).
TEST(Strategy, InferceptSwapBudgetSaturatesAtTheLargestInt64) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  // An iteration of 1e300 tokens lasts ~1e297 s: far more tokens than int64 counts could move.
  EXPECT_EQ(lamps::infercept_swap_budget_tokens(toy_batch(1e300, 0.0, 0.0), kToy), kMax);
  // A link of 1e300 B/s moving 1-byte tokens.
  const lamps::CostModel huge_link(1.0, 1.0, 1.0, 1e300, 0.0, 0.0, "huge-link");
  EXPECT_EQ(lamps::infercept_swap_budget_tokens(toy_batch(), huge_link), kMax);
  // One token a token: just below 2^63 the budget is still the floor, at 2^63 it saturates.
  const lamps::CostModel one_to_one(1.0, 0.0, 1.0, 1e3, 0.0, 0.0, "one-to-one");
  const std::int64_t below = lamps::infercept_swap_budget_tokens(toy_batch(9e18, 0.0, 0.0), one_to_one);
  EXPECT_GT(below, std::int64_t{8'999'999'000'000'000'000});
  EXPECT_LT(below, kMax);
  EXPECT_EQ(lamps::infercept_swap_budget_tokens(toy_batch(9.3e18, 0.0, 0.0), one_to_one), kMax);
}

TEST(Validation, PausedRequestRejectsMoreCachedThanContext) {
  EXPECT_THROW(lamps::PausedRequest::checked(10, 11, 1), std::invalid_argument);
  EXPECT_THROW(lamps::PausedRequest::checked(10, 1, NAN), std::invalid_argument);
  EXPECT_THROW(lamps::BatchState::checked(1, 1, 1, 1.5, 0, 0), std::invalid_argument);
}

}  // namespace
