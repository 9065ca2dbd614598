#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <tuple>
#include <vector>

#include "lamps/errors.hpp"
#include "lamps/ranking_queue.hpp"

namespace {

std::vector<std::uint32_t> drain(lamps::RankingQueue& queue) {
  std::vector<std::uint32_t> order;
  while (!queue.empty()) order.push_back(queue.pop());
  return order;
}

TEST(RankingQueue, PopsBySmallestScoreThenArrival) {
  lamps::RankingQueue queue(0);
  queue.push(0, 5.0, 0.0, std::nullopt, false);
  queue.push(1, 1.0, 3.0, std::nullopt, false);
  queue.push(2, 1.0, 2.0, std::nullopt, false);
  queue.push(3, 9.0, 1.0, std::nullopt, false);
  EXPECT_EQ(queue.ranked(), (std::vector<std::uint32_t>{2, 1, 0, 3}));
  EXPECT_EQ(drain(queue), (std::vector<std::uint32_t>{2, 1, 0, 3}));
}

TEST(RankingQueue, EqualScoreAndArrivalKeepInsertionOrder) {
  lamps::RankingQueue queue(0);
  for (std::uint32_t h : {7u, 3u, 5u}) queue.push(h, 1.0, 0.0, std::nullopt, false);
  EXPECT_EQ(drain(queue), (std::vector<std::uint32_t>{7, 3, 5}));
}

TEST(RankingQueue, EraseAndRekeyAnyElement) {
  lamps::RankingQueue queue(0);
  for (std::uint32_t h = 0; h < 6; ++h) queue.push(h, h, 0.0, std::nullopt, false);
  queue.erase(2);
  queue.update(5, -1.0);
  queue.update(0, 10.0);
  EXPECT_EQ(drain(queue), (std::vector<std::uint32_t>{5, 1, 3, 4, 0}));
}

TEST(RankingQueue, StarvedRequestsGoFirstInWaitingOrder) {
  lamps::RankingQueue queue(3);
  queue.push(0, 100.0, 0.0, std::nullopt, false);  // waits since iteration 0
  queue.tick();
  queue.push(1, 50.0, 1.0, std::nullopt, false);  // since 1
  queue.push(2, 1.0, 2.0, std::nullopt, false);
  EXPECT_EQ(queue.tick(), 0u);  // iteration 2
  EXPECT_EQ(queue.tick(), 1u);  // iteration 3: request 0 has waited 3
  EXPECT_TRUE(queue.is_promoted(0));
  EXPECT_EQ(queue.tick(), 2u);  // iteration 4: 1 and 2 have waited 3
  // FIFO among promoted, whatever the scores.
  EXPECT_EQ(drain(queue), (std::vector<std::uint32_t>{0, 1, 2}));
}

TEST(RankingQueue, PromotedStayAheadOfBetterScores) {
  lamps::RankingQueue queue(1);
  queue.push(0, 100.0, 0.0, std::nullopt, false);
  queue.tick();
  queue.push(1, 0.0, 1.0, std::nullopt, false);
  EXPECT_EQ(queue.peek(), 0u);
  // Re-inserting a promoted request keeps it promoted (it stays boosted until it finishes).
  queue.erase(0);
  queue.push(0, 100.0, 0.0, 0, true);
  EXPECT_EQ(queue.peek(), 0u);
}

TEST(RankingQueue, OldWaitingSinceIsPromotedAtPush) {
  lamps::RankingQueue queue(10);
  queue.tick(20);
  queue.push(0, 100.0, 0.0, 5, false);
  queue.push(1, 1.0, 1.0, std::nullopt, false);
  EXPECT_TRUE(queue.is_promoted(0));
  EXPECT_EQ(queue.peek(), 0u);
}

TEST(RankingQueue, ThresholdZeroNeverPromotes) {
  lamps::RankingQueue queue(0);
  queue.push(0, 100.0, 0.0, std::nullopt, false);
  EXPECT_EQ(queue.tick(1000000), 0u);
  EXPECT_FALSE(queue.is_promoted(0));
}

TEST(RankingQueue, BadInputThrowsTheRightError) {
  lamps::RankingQueue queue;
  EXPECT_THROW(queue.pop(), lamps::EmptyQueue);
  EXPECT_THROW(queue.peek(), lamps::EmptyQueue);
  EXPECT_THROW(queue.erase(4), lamps::UnknownHandle);
  EXPECT_THROW(queue.update(4, 1.0), lamps::UnknownHandle);
  EXPECT_THROW(queue.push(-1, 1.0, 0.0, std::nullopt, false), std::invalid_argument);
  EXPECT_THROW(queue.push(lamps::RankingQueue::kMaxHandle + 1, 1.0, 0.0, std::nullopt, false),
               std::invalid_argument);
  EXPECT_THROW(queue.push(1, NAN, 0.0, std::nullopt, false), std::invalid_argument);
  queue.push(1, 1.0, 0.0, std::nullopt, false);
  EXPECT_THROW(queue.push(1, 2.0, 0.0, std::nullopt, false), std::invalid_argument);
  // A bad element in a bulk update changes nothing.
  const std::int64_t handles[] = {1, 9};
  const double scores[] = {5.0, 6.0};
  EXPECT_THROW(queue.update_many(handles, scores, 2), lamps::UnknownHandle);
  EXPECT_DOUBLE_EQ(queue.score(1), 1.0);
}

// Model check against a sorted reference on random operation sequences.
TEST(RankingQueue, RandomOperationsMatchASortedReference) {
  std::mt19937_64 rng(42);
  lamps::RankingQueue queue(0);
  std::vector<std::tuple<double, double, std::uint64_t, std::uint32_t>> model;
  std::uint64_t seq = 0;
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 5);
    if (op <= 1 || model.empty()) {
      const auto h = static_cast<std::uint32_t>(rng() % 512);
      if (queue.contains(h)) continue;
      const double score = static_cast<double>(rng() % 100);
      const double arrival = static_cast<double>(rng() % 10);
      queue.push(h, score, arrival, std::nullopt, false);
      model.emplace_back(score, arrival, seq++, h);
    } else {
      auto it = model.begin() + static_cast<std::ptrdiff_t>(rng() % model.size());
      if (op == 2) {
        queue.erase(std::get<3>(*it));
        model.erase(it);
      } else if (op == 3) {
        const double score = static_cast<double>(rng() % 100);
        queue.update(std::get<3>(*it), score);
        std::get<0>(*it) = score;
      } else {
        const auto best = std::min_element(model.begin(), model.end());
        ASSERT_EQ(queue.pop(), std::get<3>(*best));
        model.erase(best);
      }
    }
    ASSERT_EQ(queue.size(), model.size());
  }
  std::sort(model.begin(), model.end());
  std::vector<std::uint32_t> expected;
  for (const auto& entry : model) expected.push_back(std::get<3>(entry));
  EXPECT_EQ(queue.ranked(), expected);
}

TEST(RankingQueue, BulkUpdateRebuildMatchesSingleUpdates) {
  std::mt19937_64 rng(7);
  lamps::RankingQueue bulk(0), single(0);
  for (std::uint32_t h = 0; h < 1000; ++h) {
    const double score = static_cast<double>(rng() % 1000);
    bulk.push(h, score, h * 0.5, std::nullopt, false);
    single.push(h, score, h * 0.5, std::nullopt, false);
  }
  for (std::size_t count : {10u, 900u}) {  // sift path, then rebuild path
    std::vector<std::int64_t> handles;
    std::vector<double> scores;
    for (std::size_t i = 0; i < count; ++i) {
      handles.push_back(static_cast<std::int64_t>(rng() % 1000));
      scores.push_back(static_cast<double>(rng() % 1000));
      single.update(handles.back(), scores.back());
    }
    bulk.update_many(handles.data(), scores.data(), count);
    EXPECT_EQ(bulk.ranked(), single.ranked());
  }
  EXPECT_EQ(drain(bulk), drain(single));
}

}  // namespace

TEST(RankingQueue, PerRequestWaitOverridesTheThreshold) {
  lamps::RankingQueue queue(10);
  queue.push(0, 9.0, 0.0, std::nullopt, false, 2);
  queue.push(1, 8.0, 1.0, std::nullopt, false, lamps::RankingQueue::kNever);
  queue.push(2, 7.0, 2.0, std::nullopt, false);
  EXPECT_EQ(queue.tick(2), 1u);
  EXPECT_TRUE(queue.is_promoted(0));
  EXPECT_EQ(queue.tick(1000000), 1u);  // request 2 at the threshold; request 1 never
  EXPECT_FALSE(queue.is_promoted(1));
  EXPECT_EQ(queue.waiting_since(1), 0u);
  EXPECT_EQ(drain(queue), (std::vector<std::uint32_t>{0, 2, 1}));
}

TEST(RankingQueue, HugeWaitsSaturateToNever) {
  lamps::RankingQueue queue(1);
  queue.tick(100);
  queue.push(0, 1.0, 0.0, std::nullopt, false, lamps::RankingQueue::kNever - 5);
  EXPECT_EQ(queue.tick(1000), 0u);
  EXPECT_FALSE(queue.is_promoted(0));
}

namespace {

TEST(RankingQueue, PromotedRequestsTakeOnePopInShare) {
  lamps::RankingQueue q(5, 3);
  q.push(10, 1010.0, 10.0, std::nullopt, false);
  q.push(11, 1011.0, 11.0, std::nullopt, false);
  q.tick(5);
  for (int h = 0; h < 6; ++h) q.push(h, h, 100.0 + h, std::nullopt, false);
  const std::vector<lamps::RankingQueue::Handle> want = {0, 1, 10, 2, 3, 11, 4, 5};
  EXPECT_EQ(q.ranked(), want);
  for (const auto h : want) EXPECT_EQ(q.pop(), h);
  EXPECT_THROW(lamps::RankingQueue(5, 0), std::invalid_argument);
}

}  // namespace
