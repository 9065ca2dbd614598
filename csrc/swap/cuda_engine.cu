// CUDA backend: pinned host pool, one non-blocking stream per direction, one event per layer.
// Copies go to the DMA engines through cudaMemcpy2DAsync: one call per (layer, fragment, run of
// consecutive blocks), so a request whose blocks are contiguous costs one call per layer.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>

#include "lamps/swap/cuda_engine.hpp"

namespace lamps::swap {

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    // Clear a non-sticky error so the next call does not report it again.
    (void)cudaGetLastError();
    throw SwapError(std::string(what) + ": " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ")");
  }
}

// Makes `device` current for the scope and restores the caller's device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { (void)cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

struct CudaTransfer final : Transfer {
  // Recorded on the caller's stream at submission: the copy starts after the work queued before.
  cudaEvent_t ready = nullptr;
  std::vector<cudaEvent_t> layer_events;

  ~CudaTransfer() override {
    // Destroying an event whose work is pending is allowed: resources go when it completes.
    if (ready != nullptr) (void)cudaEventDestroy(ready);
    for (cudaEvent_t ev : layer_events) (void)cudaEventDestroy(ev);
  }
};

class CudaSwapEngine final : public SwapEngine {
 public:
  CudaSwapEngine(std::vector<LayerSpec> layers, std::int64_t num_host_blocks, int device,
                 MemoryOwner memory_owner)
      : SwapEngine(std::move(layers), num_host_blocks, std::move(memory_owner)), device_(device) {
    DeviceGuard guard(device_);
    int max_pitch = 0;
    check(cudaDeviceGetAttribute(&max_pitch, cudaDevAttrMaxPitch, device_),
          "cudaDeviceGetAttribute(MaxPitch)");
    max_pitch_ = max_pitch;
    check(cudaStreamCreateWithFlags(&out_stream_, cudaStreamNonBlocking), "cudaStreamCreate(out)");
    check(cudaStreamCreateWithFlags(&in_stream_, cudaStreamNonBlocking), "cudaStreamCreate(in)");
    void* pool = nullptr;
    const cudaError_t err =
        cudaHostAlloc(&pool, static_cast<std::size_t>(host_pool_bytes()), cudaHostAllocPortable);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      (void)cudaStreamDestroy(out_stream_);
      (void)cudaStreamDestroy(in_stream_);
      throw PoolExhausted("cudaHostAlloc of " + std::to_string(host_pool_bytes()) +
                          " pinned bytes failed: " + cudaGetErrorString(err));
    }
    pool_ = static_cast<std::byte*>(pool);
    set_host_pool(pool_);
  }

  ~CudaSwapEngine() override {
    {
      DeviceGuard guard(device_);
      (void)cudaStreamSynchronize(out_stream_);
      (void)cudaStreamSynchronize(in_stream_);
    }
    progress();
    (void)cudaStreamDestroy(out_stream_);
    (void)cudaStreamDestroy(in_stream_);
    (void)cudaFreeHost(pool_);
  }

  const char* backend() const override { return "cuda"; }

 protected:
  std::shared_ptr<Transfer> make_transfer() override { return std::make_shared<CudaTransfer>(); }

  void launch(const std::shared_ptr<Transfer>& transfer, std::uintptr_t stream) override {
    auto ct = std::static_pointer_cast<CudaTransfer>(transfer);
    DeviceGuard guard(device_);
    const bool out = ct->direction == Direction::kOut;
    cudaStream_t copy_stream = out ? out_stream_ : in_stream_;
    std::int64_t calls = 0;
    try {
      check(cudaEventCreateWithFlags(&ct->ready, cudaEventDisableTiming), "cudaEventCreate");
      check(cudaEventRecord(ct->ready, reinterpret_cast<cudaStream_t>(stream)),
            "cudaEventRecord(caller stream)");
      check(cudaStreamWaitEvent(copy_stream, ct->ready, 0), "cudaStreamWaitEvent");
      ct->layer_events.reserve(layers().size());
      for (std::size_t layer = 0; layer < layers().size(); ++layer) {
        const LayerSpec& spec = layers()[layer];
        for (const CopyRun& run : ct->runs) {
          for (std::int64_t r = 0; r < spec.num_runs; ++r) {
            void* device = reinterpret_cast<void*>(device_address(layer, r, run.device_block));
            void* host = host_address(layer, r, run.host_block);
            calls += out ? copy_2d(host, spec.run_bytes, device, spec.block_stride, spec.run_bytes,
                                   run.count, copy_stream)
                         : copy_2d(device, spec.block_stride, host, spec.run_bytes,
                                   spec.run_bytes, run.count, copy_stream);
          }
        }
        cudaEvent_t ev = nullptr;
        check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
        ct->layer_events.push_back(ev);
        check(cudaEventRecord(ev, copy_stream), "cudaEventRecord(layer)");
      }
    } catch (...) {
      // Whatever was queued must stop touching the host blocks before the engine frees them.
      (void)cudaStreamSynchronize(copy_stream);
      throw;
    }
    count_copy_calls(calls);
    std::lock_guard<std::mutex> lock(active_mutex_);
    active_.push_back(std::move(ct));
  }

  void progress() override {
    std::vector<std::pair<std::shared_ptr<CudaTransfer>, cudaError_t>> ended;
    {
      std::lock_guard<std::mutex> lock(active_mutex_);
      DeviceGuard guard(device_);
      auto keep = active_.begin();
      for (auto it = active_.begin(); it != active_.end(); ++it) {
        const cudaError_t err = cudaEventQuery((*it)->layer_events.back());
        if (err == cudaErrorNotReady) {
          *keep++ = std::move(*it);
        } else {
          if (err != cudaSuccess) (void)cudaGetLastError();
          ended.emplace_back(std::move(*it), err);
        }
      }
      active_.erase(keep, active_.end());
    }
    for (auto& [ct, err] : ended) {
      if (err == cudaSuccess) {
        finish(ct, Status::kDone, "");
      } else {
        finish(ct, Status::kFailed, std::string("copy failed: ") + cudaGetErrorString(err));
      }
    }
  }

  bool backend_layer_ready(Transfer& transfer, std::int64_t layer) override {
    if (SwapEngine::backend_layer_ready(transfer, layer)) return true;
    auto& ct = static_cast<CudaTransfer&>(transfer);
    DeviceGuard guard(device_);
    const cudaError_t err = cudaEventQuery(ct.layer_events[static_cast<std::size_t>(layer)]);
    if (err != cudaSuccess && err != cudaErrorNotReady) (void)cudaGetLastError();
    return err != cudaErrorNotReady;
  }

  void backend_wait_layer(Transfer& transfer, std::int64_t layer, std::uintptr_t stream) override {
    auto& ct = static_cast<CudaTransfer&>(transfer);
    DeviceGuard guard(device_);
    cudaEvent_t ev = ct.layer_events[static_cast<std::size_t>(layer)];
    if (stream != 0) {
      check(cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(stream), ev, 0),
            "cudaStreamWaitEvent(layer)");
    } else {
      check(cudaEventSynchronize(ev), "cudaEventSynchronize(layer)");
    }
  }

  void backend_wait(Transfer& transfer) override {
    auto& ct = static_cast<CudaTransfer&>(transfer);
    DeviceGuard guard(device_);
    const cudaError_t err = cudaEventSynchronize(ct.layer_events.back());
    if (err != cudaSuccess) (void)cudaGetLastError();
  }

 private:
  // Rows of `width` bytes with pitches; one linear copy when both sides are dense. Falls back to
  // a copy per row when a pitch exceeds what cudaMemcpy2DAsync accepts.
  std::int64_t copy_2d(void* dst, std::int64_t dst_pitch, const void* src, std::int64_t src_pitch,
                       std::int64_t width, std::int64_t height, cudaStream_t copy_stream) const {
    if (dst_pitch == width && src_pitch == width) {
      check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(width * height), cudaMemcpyDefault,
                            copy_stream),
            "cudaMemcpyAsync");
      return 1;
    }
    if (static_cast<std::size_t>(std::max(dst_pitch, src_pitch)) <= max_pitch_) {
      check(cudaMemcpy2DAsync(dst, static_cast<std::size_t>(dst_pitch), src,
                              static_cast<std::size_t>(src_pitch), static_cast<std::size_t>(width),
                              static_cast<std::size_t>(height), cudaMemcpyDefault, copy_stream),
            "cudaMemcpy2DAsync");
      return 1;
    }
    for (std::int64_t row = 0; row < height; ++row) {
      check(cudaMemcpyAsync(static_cast<std::byte*>(dst) + row * dst_pitch,
                            static_cast<const std::byte*>(src) + row * src_pitch,
                            static_cast<std::size_t>(width), cudaMemcpyDefault, copy_stream),
            "cudaMemcpyAsync(row)");
    }
    return height;
  }

  int device_ = 0;
  std::size_t max_pitch_ = 0;
  cudaStream_t out_stream_ = nullptr;
  cudaStream_t in_stream_ = nullptr;
  std::byte* pool_ = nullptr;
  std::mutex active_mutex_;
  std::vector<std::shared_ptr<CudaTransfer>> active_;
};

}  // namespace

CudaStatus cuda_status() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaStatus{true, false,
                      std::string("built with CUDA, but no usable device: ") +
                          cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")"};
  }
  if (count == 0) return CudaStatus{true, false, "built with CUDA, but no CUDA device is visible"};
  return CudaStatus{true, true, ""};
}

std::unique_ptr<SwapEngine> make_cuda_engine(std::vector<LayerSpec> layers,
                                             std::int64_t num_host_blocks, int device,
                                             MemoryOwner memory_owner) {
  const CudaStatus status = cuda_status();
  if (!status.usable) throw SwapError(status.reason);
  int count = 0;
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (device < 0 || device >= count) {
    throw std::invalid_argument("device " + std::to_string(device) + " is out of range [0, " +
                                std::to_string(count) + ")");
  }
  return std::make_unique<CudaSwapEngine>(std::move(layers), num_host_blocks, device,
                                          std::move(memory_owner));
}

}  // namespace lamps::swap
