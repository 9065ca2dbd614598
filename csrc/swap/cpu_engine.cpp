#include "lamps/swap/cpu_engine.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

namespace lamps::swap {

namespace {

constexpr std::size_t kPoolAlignment = 4096;

// memcpy of `height` rows of `width` bytes with the given pitches; one call when both sides are
// dense. Returns the number of memcpy calls.
std::int64_t copy_2d(std::byte* dst, std::int64_t dst_pitch, const std::byte* src,
                     std::int64_t src_pitch, std::int64_t width, std::int64_t height) {
  if (dst_pitch == width && src_pitch == width) {
    std::memcpy(dst, src, static_cast<std::size_t>(width * height));
    return 1;
  }
  for (std::int64_t row = 0; row < height; ++row) {
    std::memcpy(dst + row * dst_pitch, src + row * src_pitch, static_cast<std::size_t>(width));
  }
  return height;
}

}  // namespace

CpuSwapEngine::CpuSwapEngine(std::vector<LayerSpec> layers, std::int64_t num_host_blocks,
                             MemoryOwner memory_owner)
    : SwapEngine(std::move(layers), num_host_blocks, std::move(memory_owner)) {
  const auto bytes = static_cast<std::size_t>(host_pool_bytes());
  const std::size_t rounded = (bytes + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment;
  void* pool = std::aligned_alloc(kPoolAlignment, rounded);
  if (pool == nullptr) {
    throw PoolExhausted("could not allocate a host pool of " + std::to_string(bytes) + " bytes");
  }
  pool_ = static_cast<std::byte*>(pool);
  set_host_pool(pool_);
  out_thread_ = std::thread([this] { run_copier(out_); });
  in_thread_ = std::thread([this] { run_copier(in_); });
}

CpuSwapEngine::~CpuSwapEngine() {
  stop_ = true;
  set_paused(false);
  for (Queue* queue : {&out_, &in_}) {
    std::lock_guard<std::mutex> lock(queue->mutex);
    queue->cv.notify_all();
  }
  out_thread_.join();
  in_thread_.join();
  std::free(pool_);
}

void CpuSwapEngine::set_paused(bool paused) {
  {
    std::lock_guard<std::mutex> lock(pause_mutex_);
    paused_ = paused;
  }
  pause_cv_.notify_all();
}

void CpuSwapEngine::launch(const std::shared_ptr<Transfer>& transfer, std::uintptr_t) {
  Queue& queue = transfer->direction == Direction::kOut ? out_ : in_;
  {
    std::lock_guard<std::mutex> lock(queue.mutex);
    queue.pending.push_back(transfer);
  }
  queue.cv.notify_one();
}

void CpuSwapEngine::run_copier(Queue& queue) {
  for (;;) {
    std::shared_ptr<Transfer> transfer;
    {
      std::unique_lock<std::mutex> lock(queue.mutex);
      queue.cv.wait(lock, [&] { return stop_ || !queue.pending.empty(); });
      if (queue.pending.empty()) return;
      transfer = std::move(queue.pending.front());
      queue.pending.pop_front();
    }
    // A stopping engine still reports what it drops, so no caller waits forever.
    Status status = Status::kAborted;
    std::string error;
    if (!stop_) {
      try {
        status = copy(*transfer);
      } catch (const std::exception& e) {
        status = Status::kFailed;
        error = e.what();
      }
    }
    finish(transfer, status, error);
  }
}

bool CpuSwapEngine::wait_unpaused(Transfer& transfer) {
  {
    std::unique_lock<std::mutex> lock(pause_mutex_);
    pause_cv_.wait(lock, [&] { return !paused_ || stop_; });
  }
  std::lock_guard<std::mutex> lock(transfer.mutex);
  return !transfer.abort_requested && !stop_;
}

Status CpuSwapEngine::copy(Transfer& transfer) {
  const bool out = transfer.direction == Direction::kOut;
  std::int64_t calls = 0;
  for (std::size_t layer = 0; layer < layers().size(); ++layer) {
    if (!wait_unpaused(transfer)) {
      count_copy_calls(calls);
      return Status::kAborted;
    }
    const LayerSpec& spec = layers()[layer];
    for (const CopyRun& run : transfer.runs) {
      for (std::int64_t r = 0; r < spec.num_runs; ++r) {
        auto* device = reinterpret_cast<std::byte*>(device_address(layer, r, run.device_block));
        std::byte* host = host_address(layer, r, run.host_block);
        if (out) {
          calls += copy_2d(host, spec.run_bytes, device, spec.block_stride, spec.run_bytes,
                           run.count);
        } else {
          calls += copy_2d(device, spec.block_stride, host, spec.run_bytes, spec.run_bytes,
                           run.count);
        }
      }
    }
    mark_layer_done(transfer, static_cast<int>(layer) + 1);
  }
  count_copy_calls(calls);
  return Status::kDone;
}

}  // namespace lamps::swap
