#include "lamps/swap/engine.hpp"

#include <algorithm>
#include <limits>
#include <unordered_set>
#include <utility>

namespace lamps::swap {

namespace {

std::string layer_field(std::size_t index, const char* field) {
  return "layers[" + std::to_string(index) + "]." + field;
}

void require_positive(std::int64_t value, std::size_t index, const char* field) {
  if (value <= 0) {
    throw std::invalid_argument(layer_field(index, field) + " must be > 0 (got " +
                                std::to_string(value) + ")");
  }
}

}  // namespace

const char* to_string(Direction direction) { return direction == Direction::kOut ? "out" : "in"; }

const char* to_string(Status status) {
  switch (status) {
    case Status::kPending:
      return "pending";
    case Status::kDone:
      return "done";
    case Status::kFailed:
      return "failed";
    case Status::kAborted:
      return "aborted";
  }
  return "unknown";
}

LayerSpec normalize_layer(const LayerSpec& spec, std::size_t index) {
  if (spec.base == 0) throw std::invalid_argument(layer_field(index, "base") + " must not be null");
  require_positive(spec.num_blocks, index, "num_blocks");
  require_positive(spec.num_runs, index, "num_runs");
  require_positive(spec.run_bytes, index, "run_bytes");
  require_positive(spec.block_stride, index, "block_stride");
  LayerSpec out = spec;
  if (out.num_runs == 1) {
    out.run_stride = 0;
  } else {
    if (out.run_stride < out.run_bytes) {
      throw std::invalid_argument(layer_field(index, "run_stride") + " (" +
                                  std::to_string(out.run_stride) + ") must be >= run_bytes (" +
                                  std::to_string(out.run_bytes) + ") when num_runs > 1");
    }
    if (out.run_stride == out.run_bytes) {
      out.run_bytes *= out.num_runs;
      out.num_runs = 1;
      out.run_stride = 0;
    }
  }
  // Blocks of a layer must not overlap each other, or a swap-in would overwrite a neighbour.
  if (out.num_runs == 1 && out.block_stride < out.run_bytes) {
    throw std::invalid_argument(layer_field(index, "block_stride") + " (" +
                                std::to_string(out.block_stride) + ") must be >= the block's " +
                                std::to_string(out.run_bytes) + " bytes");
  }
  if (out.num_runs > 1 && out.block_stride < out.run_bytes) {
    throw std::invalid_argument(layer_field(index, "block_stride") + " (" +
                                std::to_string(out.block_stride) + ") must be >= run_bytes (" +
                                std::to_string(out.run_bytes) + ")");
  }
  return out;
}

std::vector<CopyRun> coalesce(const std::vector<std::int64_t>& device_blocks,
                              const std::vector<std::int64_t>& host_blocks) {
  if (device_blocks.size() != host_blocks.size()) {
    throw std::invalid_argument("device_blocks and host_blocks must have the same length (" +
                                std::to_string(device_blocks.size()) + " vs " +
                                std::to_string(host_blocks.size()) + ")");
  }
  std::vector<CopyRun> runs;
  for (std::size_t i = 0; i < device_blocks.size(); ++i) {
    if (!runs.empty()) {
      CopyRun& last = runs.back();
      if (device_blocks[i] == last.device_block + last.count &&
          host_blocks[i] == last.host_block + last.count) {
        ++last.count;
        continue;
      }
    }
    runs.push_back(CopyRun{device_blocks[i], host_blocks[i], 1});
  }
  return runs;
}

SwapEngine::SwapEngine(std::vector<LayerSpec> layers, std::int64_t num_host_blocks,
                       MemoryOwner memory_owner)
    : memory_owner_(std::move(memory_owner)), num_host_blocks_(num_host_blocks) {
  if (layers.empty()) throw std::invalid_argument("layers must not be empty");
  if (num_host_blocks <= 0) {
    throw std::invalid_argument("num_host_blocks must be > 0 (got " +
                                std::to_string(num_host_blocks) + ")");
  }
  layers_.reserve(layers.size());
  min_device_blocks_ = std::numeric_limits<std::int64_t>::max();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    layers_.push_back(normalize_layer(layers[i], i));
    min_device_blocks_ = std::min(min_device_blocks_, layers_.back().num_blocks);
  }
  const std::int64_t limit = std::numeric_limits<std::int64_t>::max() / num_host_blocks;
  for (const LayerSpec& layer : layers_) {
    layer_offsets_.push_back(host_block_bytes_ * num_host_blocks);
    if (layer.block_bytes() > limit - host_block_bytes_) {
      throw std::invalid_argument("num_host_blocks * host block bytes overflows 64 bits");
    }
    host_block_bytes_ += layer.block_bytes();
  }
  for (std::int64_t b = 0; b < num_host_blocks; ++b) free_blocks_.insert(free_blocks_.end(), b);
}

std::int64_t SwapEngine::num_free_host_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<std::int64_t>(free_blocks_.size());
}

std::byte* SwapEngine::host_address(std::size_t layer, std::int64_t run,
                                    std::int64_t host_block) const {
  const LayerSpec& spec = layers_[layer];
  return host_base_ + layer_offsets_[layer] + run * (num_host_blocks_ * spec.run_bytes) +
         host_block * spec.run_bytes;
}

std::uintptr_t SwapEngine::device_address(std::size_t layer, std::int64_t run,
                                          std::int64_t device_block) const {
  const LayerSpec& spec = layers_[layer];
  return spec.base + static_cast<std::uintptr_t>(device_block * spec.block_stride) +
         static_cast<std::uintptr_t>(run * spec.run_stride);
}

std::vector<std::int64_t> SwapEngine::allocate_locked(std::int64_t count) {
  if (count > static_cast<std::int64_t>(free_blocks_.size())) {
    throw PoolExhausted("host pool exhausted: need " + std::to_string(count) + " blocks, " +
                        std::to_string(free_blocks_.size()) + " of " +
                        std::to_string(num_host_blocks_) + " free");
  }
  // Lowest ids first: a fresh or lightly used pool hands out consecutive blocks, which coalesce.
  std::vector<std::int64_t> blocks;
  blocks.reserve(static_cast<std::size_t>(count));
  auto it = free_blocks_.begin();
  for (std::int64_t i = 0; i < count; ++i) blocks.push_back(*it++);
  free_blocks_.erase(free_blocks_.begin(), it);
  return blocks;
}

void SwapEngine::free_locked(const std::vector<std::int64_t>& blocks) {
  for (std::int64_t b : blocks) free_blocks_.insert(b);
}

void SwapEngine::check_device_blocks(const std::vector<std::int64_t>& device_blocks,
                                     const char* field) const {
  if (device_blocks.empty()) throw std::invalid_argument(std::string(field) + " must not be empty");
  std::unordered_set<std::int64_t> seen;
  seen.reserve(device_blocks.size());
  for (std::size_t i = 0; i < device_blocks.size(); ++i) {
    const std::int64_t b = device_blocks[i];
    if (b < 0 || b >= min_device_blocks_) {
      throw std::invalid_argument(std::string(field) + "[" + std::to_string(i) + "] = " +
                                  std::to_string(b) + " is out of range [0, " +
                                  std::to_string(min_device_blocks_) + ")");
    }
    if (!seen.insert(b).second) {
      throw std::invalid_argument(std::string(field) + " contains block " + std::to_string(b) +
                                  " twice");
    }
  }
}

void SwapEngine::swap_out(const std::string& request_id,
                          const std::vector<std::int64_t>& device_blocks, std::uintptr_t stream) {
  check_device_blocks(device_blocks, "device_blocks");
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(request_id);
  if (found != entries_.end()) {
    throw SwapError("request '" + request_id + "' already has a host copy or a transfer in flight");
  }
  std::vector<std::int64_t> host_blocks =
      allocate_locked(static_cast<std::int64_t>(device_blocks.size()));
  auto transfer = make_transfer();
  transfer->request_id = request_id;
  transfer->direction = Direction::kOut;
  transfer->runs = coalesce(device_blocks, host_blocks);
  transfer->bytes = host_block_bytes_ * static_cast<std::int64_t>(device_blocks.size());
  Entry& entry = entries_[request_id];
  entry.host_blocks = std::move(host_blocks);
  entry.active = transfer;
  try {
    launch(transfer, stream);
  } catch (...) {
    free_locked(entry.host_blocks);
    entries_.erase(request_id);
    throw;
  }
  ++stats_.swap_outs;
}

void SwapEngine::swap_in(const std::string& request_id,
                         const std::vector<std::int64_t>& device_blocks, std::int64_t first_block,
                         std::uintptr_t stream) {
  check_device_blocks(device_blocks, "device_blocks");
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(request_id);
  if (found == entries_.end()) {
    throw UnknownRequest("request '" + request_id + "' has no host copy to swap in");
  }
  Entry& entry = found->second;
  if (entry.active) {
    throw SwapError("request '" + request_id + "' has a " + to_string(entry.active->direction) +
                    " transfer in flight");
  }
  if (!entry.copy_valid) {
    throw SwapError("request '" + request_id + "' has no complete host copy");
  }
  const auto stored = static_cast<std::int64_t>(entry.host_blocks.size());
  const auto count = static_cast<std::int64_t>(device_blocks.size());
  if (first_block < 0 || first_block + count > stored) {
    throw std::invalid_argument("first_block + len(device_blocks) = " +
                                std::to_string(first_block) + " + " + std::to_string(count) +
                                " exceeds the " + std::to_string(stored) +
                                " blocks stored for request '" + request_id + "'");
  }
  std::vector<std::int64_t> host_blocks(entry.host_blocks.begin() + first_block,
                                        entry.host_blocks.begin() + first_block + count);
  auto transfer = make_transfer();
  transfer->request_id = request_id;
  transfer->direction = Direction::kIn;
  transfer->runs = coalesce(device_blocks, host_blocks);
  transfer->bytes = host_block_bytes_ * count;
  entry.active = transfer;
  try {
    launch(transfer, stream);
  } catch (...) {
    entry.active.reset();
    throw;
  }
  ++stats_.swap_ins;
}

void SwapEngine::finish(const std::shared_ptr<Transfer>& transfer, Status status,
                        const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    {
      std::lock_guard<std::mutex> tlock(transfer->mutex);
      if (transfer->finished) return;
      if (status == Status::kDone && transfer->abort_requested) status = Status::kAborted;
      transfer->finished = true;
      transfer->status = status;
    }
    auto found = entries_.find(transfer->request_id);
    if (found != entries_.end() && found->second.active == transfer) {
      Entry& entry = found->second;
      entry.active.reset();
      const bool out = transfer->direction == Direction::kOut;
      // A completed swap-in consumes the copy; a failed or aborted swap-out never made one.
      const bool drop = entry.release_pending || (out && status != Status::kDone) ||
                        (!out && status == Status::kDone);
      if (drop) {
        free_locked(entry.host_blocks);
        entries_.erase(found);
      } else if (out) {
        entry.copy_valid = true;
      }
    }
    if (status == Status::kDone) {
      (transfer->direction == Direction::kOut ? stats_.bytes_out : stats_.bytes_in) +=
          transfer->bytes;
    } else if (status == Status::kFailed) {
      ++stats_.failed;
    } else if (status == Status::kAborted) {
      ++stats_.aborted;
    }
    completed_.push_back(Completion{transfer->request_id, transfer->direction, status, error});
  }
  transfer->cv.notify_all();
}

void SwapEngine::mark_layer_done(Transfer& transfer, int layers_done) {
  {
    std::lock_guard<std::mutex> lock(transfer.mutex);
    transfer.layers_done = layers_done;
  }
  transfer.cv.notify_all();
}

void SwapEngine::count_copy_calls(std::int64_t calls) {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.copy_calls += calls;
}

std::vector<Completion> SwapEngine::poll() {
  progress();
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Completion> out(std::make_move_iterator(completed_.begin()),
                              std::make_move_iterator(completed_.end()));
  completed_.clear();
  return out;
}

std::shared_ptr<Transfer> SwapEngine::active_transfer(const std::string& request_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(request_id);
  if (found == entries_.end()) return nullptr;
  return found->second.active;
}

bool SwapEngine::backend_layer_ready(Transfer& transfer, std::int64_t layer) {
  std::lock_guard<std::mutex> lock(transfer.mutex);
  return transfer.finished || transfer.layers_done > layer;
}

void SwapEngine::backend_wait_layer(Transfer& transfer, std::int64_t layer, std::uintptr_t) {
  std::unique_lock<std::mutex> lock(transfer.mutex);
  transfer.cv.wait(lock, [&] { return transfer.finished || transfer.layers_done > layer; });
}

void SwapEngine::backend_wait(Transfer& transfer) {
  std::unique_lock<std::mutex> lock(transfer.mutex);
  transfer.cv.wait(lock, [&] { return transfer.finished; });
}

void SwapEngine::backend_abort(Transfer& transfer) {
  std::lock_guard<std::mutex> lock(transfer.mutex);
  transfer.abort_requested = true;
}

bool SwapEngine::layer_ready(const std::string& request_id, std::int64_t layer) {
  if (layer < 0 || layer >= num_layers()) {
    throw std::invalid_argument("layer " + std::to_string(layer) + " is out of range [0, " +
                                std::to_string(num_layers()) + ")");
  }
  auto transfer = active_transfer(request_id);
  return !transfer || backend_layer_ready(*transfer, layer);
}

void SwapEngine::wait_layer(const std::string& request_id, std::int64_t layer,
                            std::uintptr_t stream) {
  if (layer < 0 || layer >= num_layers()) {
    throw std::invalid_argument("layer " + std::to_string(layer) + " is out of range [0, " +
                                std::to_string(num_layers()) + ")");
  }
  auto transfer = active_transfer(request_id);
  if (transfer) backend_wait_layer(*transfer, layer, stream);
}

void SwapEngine::wait(const std::string& request_id) {
  auto transfer = active_transfer(request_id);
  if (transfer) backend_wait(*transfer);
  progress();
}

bool SwapEngine::abort(const std::string& request_id) {
  auto transfer = active_transfer(request_id);
  if (!transfer) return false;
  backend_abort(*transfer);
  return true;
}

bool SwapEngine::release(const std::string& request_id) {
  std::shared_ptr<Transfer> transfer;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = entries_.find(request_id);
    if (found == entries_.end()) return false;
    Entry& entry = found->second;
    if (!entry.active) {
      free_locked(entry.host_blocks);
      entries_.erase(found);
      return true;
    }
    entry.release_pending = true;
    transfer = entry.active;
  }
  backend_abort(*transfer);
  return true;
}

std::int64_t SwapEngine::stored_blocks(const std::string& request_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(request_id);
  return found == entries_.end() ? 0 : static_cast<std::int64_t>(found->second.host_blocks.size());
}

bool SwapEngine::has_copy(const std::string& request_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(request_id);
  return found != entries_.end() && found->second.copy_valid && !found->second.release_pending;
}

bool SwapEngine::in_flight(const std::string& request_id) const {
  return active_transfer(request_id) != nullptr;
}

std::int64_t SwapEngine::num_in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::int64_t n = 0;
  for (const auto& item : entries_) n += item.second.active ? 1 : 0;
  return n;
}

EngineStats SwapEngine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace lamps::swap
