#pragma once
// The LAMPS waiting queue: requests ranked by score (smallest memory-over-time first), ties by
// arrival, with starvation prevention: a request that has waited `starvation_threshold` ticks
// of the queue's clock goes ahead of every unpromoted request, FIFO among promoted ones. The
// clock is the caller's: one tick per scheduler iteration, or one per millisecond of waiting.
// A request may carry its own wait before promotion (`starve_after`, kNever for none), which
// expresses rules such as "waited k times its predicted service" or "never if not yet run".
//
// Promoted requests may take only a share of the pops (`promoted_share` = k: at most one pop in
// k goes to the oldest promoted request while unpromoted ones wait), so that under overload,
// when everybody has waited long, the queue keeps its ranking for the other k - 1 pops instead
// of turning into arrival order; every request's wait stays bounded (each k-th pop serves the
// oldest starved one). k = 1: promoted requests always go first (the paper's rule).
//
// Starvation is checked without touching every queued request per iteration: a second heap
// orders unpromoted requests by the tick they become starved, so tick() only looks at the
// requests that cross it, and each request is promoted at most once.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "lamps/errors.hpp"
#include "lamps/indexed_heap.hpp"

namespace lamps {

class RankingQueue {
 public:
  using Handle = std::uint32_t;
  // Handles are caller-chosen slot indices; the bound keeps a stray huge handle from
  // allocating gigabytes of position table.
  static constexpr std::int64_t kMaxHandle = (std::int64_t{1} << 26) - 1;
  // A `starve_after` that never promotes.
  static constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();

  // starvation_threshold == 0 disables promotion; promoted_share >= 1 (see above).
  explicit RankingQueue(std::uint64_t starvation_threshold = 100, std::uint64_t promoted_share = 1)
      : starvation_threshold_(starvation_threshold), promoted_share_(checked_share(promoted_share)) {}

  std::uint64_t starvation_threshold() const { return starvation_threshold_; }
  std::uint64_t promoted_share() const { return promoted_share_; }
  std::uint64_t iteration() const { return iteration_; }
  std::size_t size() const { return by_score_.size() + promoted_.size(); }
  bool empty() const { return size() == 0; }

  static Handle checked_handle(std::int64_t handle) {
    if (handle < 0 || handle > kMaxHandle) {
      throw std::invalid_argument("handle must be in [0, " + std::to_string(kMaxHandle) +
                                  "] (got " + std::to_string(handle) + ")");
    }
    return static_cast<Handle>(handle);
  }

  bool contains(std::int64_t handle) const {
    if (handle < 0 || handle > kMaxHandle) return false;
    const auto h = static_cast<Handle>(handle);
    return by_score_.contains(h) || promoted_.contains(h);
  }

  // `starve_after`: ticks of waiting before this request is promoted (default: the queue's
  // threshold; kNever: not promoted by waiting).
  void push(std::int64_t handle, double score, double arrival,
            std::optional<std::uint64_t> waiting_since, bool promoted,
            std::optional<std::uint64_t> starve_after = std::nullopt) {
    const Handle h = checked_handle(handle);
    require_finite(score, "score");
    require_finite(arrival, "arrival");
    if (contains(h)) {
      throw std::invalid_argument("handle " + std::to_string(h) + " is already queued");
    }
    const std::uint64_t since = waiting_since.value_or(iteration_);
    if (h >= scores_.size()) {
      scores_.resize(h + std::size_t{1}, 0.0);
      since_.resize(h + std::size_t{1}, 0);
    }
    scores_[h] = score;
    since_[h] = since;
    const double due = starved_at(since, starve_after.value_or(default_wait()));
    const std::uint64_t seq = next_seq_++;
    if (promoted || due <= static_cast<double>(iteration_)) {
      promoted_.push(HeapNode{static_cast<double>(since), arrival, seq, h});
    } else {
      by_score_.push(HeapNode{score, arrival, seq, h});
      by_age_.push(HeapNode{due, arrival, seq, h});
    }
  }

  Handle peek() const {
    if (promoted_turn(unpromoted_pops_)) return promoted_.top().handle;
    if (!by_score_.empty()) return by_score_.top().handle;
    throw EmptyQueue("peek from an empty RankingQueue");
  }

  Handle pop() {
    const Handle h = peek();
    const bool promoted = promoted_.contains(h);
    erase(h);
    unpromoted_pops_ = promoted ? 0 : unpromoted_pops_ + 1;
    return h;
  }

  void erase(std::int64_t handle) {
    const Handle h = known(handle);
    if (promoted_.contains(h)) {
      promoted_.erase(h);
    } else {
      by_score_.erase(h);
      by_age_.erase(h);
    }
  }

  void update(std::int64_t handle, double score) {
    const Handle h = known(handle);
    require_finite(score, "score");
    scores_[h] = score;
    if (by_score_.contains(h)) by_score_.set_key(h, score);
  }

  // Re-key many requests at once. All inputs are checked before anything changes, so a bad
  // element leaves the queue as it was. Duplicated handles: the last score wins.
  void update_many(const std::int64_t* handles, const double* scores, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      known(handles[i]);
      if (!std::isfinite(scores[i])) {
        throw std::invalid_argument("scores[" + std::to_string(i) + "] must be finite (got " +
                                    describe(scores[i]) + ")");
      }
    }
    // Past about a quarter of the heap, one O(n) rebuild beats count O(log n) sifts.
    const bool rebuild = count * 4 >= by_score_.size();
    for (std::size_t i = 0; i < count; ++i) {
      const auto h = static_cast<Handle>(handles[i]);
      scores_[h] = scores[i];
      if (!by_score_.contains(h)) continue;
      if (rebuild) {
        by_score_.set_key_unordered(h, scores[i]);
      } else {
        by_score_.set_key(h, scores[i]);
      }
    }
    if (rebuild) by_score_.rebuild();
  }

  // Advance the scheduler-iteration clock; returns how many requests were promoted.
  std::size_t tick(std::uint64_t iterations = 1) {
    iteration_ += iterations;
    std::size_t promoted = 0;
    while (!by_age_.empty() && by_age_.top().key <= static_cast<double>(iteration_)) {
      promote(by_age_.top().handle);
      ++promoted;
    }
    return promoted;
  }

  bool is_promoted(std::int64_t handle) const { return promoted_.contains(known(handle)); }
  double score(std::int64_t handle) const { return scores_[known(handle)]; }

  std::uint64_t waiting_since(std::int64_t handle) const { return since_[known(handle)]; }

  // Handles in the order pop() would return them, without changing the queue.
  std::vector<Handle> ranked() const {
    std::vector<HeapNode> promoted = promoted_.nodes();
    std::vector<HeapNode> unpromoted = by_score_.nodes();
    std::sort(promoted.begin(), promoted.end());
    std::sort(unpromoted.begin(), unpromoted.end());
    std::vector<Handle> order;
    order.reserve(size());
    std::size_t p = 0;
    std::size_t u = 0;
    std::uint64_t pops = unpromoted_pops_;
    while (p < promoted.size() || u < unpromoted.size()) {
      const bool take_promoted =
          p < promoted.size() && (u == unpromoted.size() || pops + 1 >= promoted_share_);
      if (take_promoted) {
        order.push_back(promoted[p++].handle);
        pops = 0;
      } else {
        order.push_back(unpromoted[u++].handle);
        ++pops;
      }
    }
    return order;
  }

  void clear() {
    by_score_.clear();
    by_age_.clear();
    promoted_.clear();
  }

 private:
  std::uint64_t default_wait() const {
    return starvation_threshold_ == 0 ? kNever : starvation_threshold_;
  }

  // The tick at which a request waiting since `since` is starved (+inf: never). A double:
  // the age heap's key, exact below 2^53 ticks.
  static std::uint64_t checked_share(std::uint64_t share) {
    if (share < 1) throw std::invalid_argument("promoted_share must be >= 1 (got 0)");
    return share;
  }

  // Whether the next pop goes to the oldest promoted request.
  bool promoted_turn(std::uint64_t unpromoted_pops) const {
    return !promoted_.empty() && (by_score_.empty() || unpromoted_pops + 1 >= promoted_share_);
  }

  static double starved_at(std::uint64_t since, std::uint64_t after) {
    if (after == kNever || since > kNever - after) return std::numeric_limits<double>::infinity();
    return static_cast<double>(since + after);
  }

  Handle known(std::int64_t handle) const {
    if (!contains(handle)) {
      throw UnknownHandle("handle " + std::to_string(handle) + " is not queued");
    }
    return static_cast<Handle>(handle);
  }

  void promote(Handle h) {
    HeapNode node = by_age_.erase(h);
    by_score_.erase(h);
    node.key = static_cast<double>(since_[h]);  // FIFO by waiting start among promoted
    promoted_.push(node);
  }

  std::uint64_t starvation_threshold_;
  std::uint64_t promoted_share_;
  std::uint64_t unpromoted_pops_ = 0;  // pops since the last promoted one
  std::uint64_t iteration_ = 0;
  std::uint64_t next_seq_ = 0;
  IndexedHeap by_score_;  // unpromoted requests by (score, arrival, seq)
  IndexedHeap by_age_;    // the same requests by (tick they starve, arrival, seq)
  IndexedHeap promoted_;  // promoted requests by (waiting_since, arrival, seq): FIFO by age
  std::vector<double> scores_;  // handle -> latest score, promoted requests included
  std::vector<std::uint64_t> since_;  // handle -> tick it started waiting
};

}  // namespace lamps
