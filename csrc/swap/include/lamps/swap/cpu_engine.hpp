#pragma once
// CPU backend of the swap engine: the "device" KV cache is host memory too (vLLM's CPU backend),
// and copies run on two copier threads (one per direction, like the CUDA backend's two streams),
// so submission and polling never block the caller and abort races are real.
#include <atomic>
#include <thread>

#include "lamps/swap/engine.hpp"

namespace lamps::swap {

class CpuSwapEngine final : public SwapEngine {
 public:
  CpuSwapEngine(std::vector<LayerSpec> layers, std::int64_t num_host_blocks,
                MemoryOwner memory_owner = nullptr);
  // Stops and joins both copiers, then frees the pool; the base releases the memory owner after.
  ~CpuSwapEngine() override;

  const char* backend() const override { return "cpu"; }

  // Holds both copiers before their next layer (true) or lets them go (false). Lets a caller
  // order events deterministically, e.g. abort a transfer that has provably not finished.
  void set_paused(bool paused);

 protected:
  void launch(const std::shared_ptr<Transfer>& transfer, std::uintptr_t stream) override;

 private:
  struct Queue {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<std::shared_ptr<Transfer>> pending;
  };

  void run_copier(Queue& queue);
  // Copies every layer of the transfer; returns the final status.
  Status copy(Transfer& transfer);
  bool wait_unpaused(Transfer& transfer);

  std::byte* pool_ = nullptr;
  Queue out_;
  Queue in_;
  std::mutex pause_mutex_;
  std::condition_variable pause_cv_;
  bool paused_ = false;
  std::atomic<bool> stop_{false};
  std::thread out_thread_;
  std::thread in_thread_;
};

}  // namespace lamps::swap
