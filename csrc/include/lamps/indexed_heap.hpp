#pragma once
// A binary min-heap of handles that knows where each handle sits, so any element can be
// erased or re-keyed in O(log n). Keys live in the heap nodes (not behind the handle) so that
// sifting compares neighbouring memory.
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace lamps {

struct HeapNode {
  double key;          // the primary order: score, or the iteration a request started waiting
  double arrival;      // first tie-break: arrival time
  std::uint64_t seq;   // second tie-break: insertion order, unique
  std::uint32_t handle;

  bool operator<(const HeapNode& other) const {
    if (key != other.key) return key < other.key;
    if (arrival != other.arrival) return arrival < other.arrival;
    return seq < other.seq;
  }
};

class IndexedHeap {
 public:
  static constexpr std::uint32_t kAbsent = 0xffffffffu;

  std::size_t size() const { return nodes_.size(); }
  bool empty() const { return nodes_.empty(); }
  bool contains(std::uint32_t handle) const {
    return handle < position_.size() && position_[handle] != kAbsent;
  }
  const HeapNode& top() const { return nodes_.front(); }
  const HeapNode& node(std::uint32_t handle) const { return nodes_[position_[handle]]; }
  const std::vector<HeapNode>& nodes() const { return nodes_; }

  void push(const HeapNode& node) {
    if (node.handle >= position_.size()) position_.resize(node.handle + std::size_t{1}, kAbsent);
    nodes_.push_back(node);
    position_[node.handle] = static_cast<std::uint32_t>(nodes_.size() - 1);
    sift_up(nodes_.size() - 1);
  }

  HeapNode erase(std::uint32_t handle) {
    const std::size_t at = position_[handle];
    const HeapNode removed = nodes_[at];
    position_[handle] = kAbsent;
    const HeapNode last = nodes_.back();
    nodes_.pop_back();
    if (at < nodes_.size()) {
      place(at, last);
      restore(at);
    }
    return removed;
  }

  void set_key(std::uint32_t handle, double key) {
    const std::size_t at = position_[handle];
    nodes_[at].key = key;
    restore(at);
  }

  // Change keys without restoring order; rebuild() must follow.
  void set_key_unordered(std::uint32_t handle, double key) { nodes_[position_[handle]].key = key; }

  // Floyd's bottom-up heap construction: O(n), cheaper than n sifts when most keys changed.
  void rebuild() {
    for (std::size_t i = nodes_.size() / 2; i-- > 0;) sift_down(i);
  }

  void clear() {
    for (const HeapNode& n : nodes_) position_[n.handle] = kAbsent;
    nodes_.clear();
  }

 private:
  void place(std::size_t at, const HeapNode& node) {
    nodes_[at] = node;
    position_[node.handle] = static_cast<std::uint32_t>(at);
  }

  void restore(std::size_t at) {
    if (at > 0 && nodes_[at] < nodes_[(at - 1) / 2]) {
      sift_up(at);
    } else {
      sift_down(at);
    }
  }

  void sift_up(std::size_t at) {
    const HeapNode moving = nodes_[at];
    while (at > 0) {
      const std::size_t parent = (at - 1) / 2;
      if (!(moving < nodes_[parent])) break;
      place(at, nodes_[parent]);
      at = parent;
    }
    place(at, moving);
  }

  void sift_down(std::size_t at) {
    const HeapNode moving = nodes_[at];
    const std::size_t n = nodes_.size();
    while (true) {
      std::size_t child = 2 * at + 1;
      if (child >= n) break;
      if (child + 1 < n && nodes_[child + 1] < nodes_[child]) ++child;
      if (!(nodes_[child] < moving)) break;
      place(at, nodes_[child]);
      at = child;
    }
    place(at, moving);
  }

  std::vector<HeapNode> nodes_;
  std::vector<std::uint32_t> position_;  // handle -> index in nodes_, kAbsent when not here
};

}  // namespace lamps
