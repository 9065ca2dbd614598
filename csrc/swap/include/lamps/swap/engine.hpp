#pragma once
// KV swap engine: moves one request's KV blocks between the device KV cache and a host pool of
// fixed-size blocks, and back. No Python and no CUDA types here: the CPU backend (cpu_engine.hpp)
// and the CUDA backend (cuda_engine.hpp) implement the same SwapEngine interface.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace lamps::swap {

// Base of the engine's state errors (Python: RuntimeError).
class SwapError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The host pool has fewer free blocks than a swap-out needs (Python: PoolExhaustedError, a
// MemoryError). Nothing was allocated or copied; the caller falls back to another strategy.
class PoolExhausted : public SwapError {
 public:
  using SwapError::SwapError;
};

// A request id the engine holds nothing for (Python: UnknownRequestError, a KeyError).
class UnknownRequest : public SwapError {
 public:
  using SwapError::SwapError;
};

// std::invalid_argument is used for bad values: block ids out of range, duplicates, bad layouts.

// Where one layer's KV cache lives and how a block is laid out in it. A block is `num_runs`
// fragments of `run_bytes` each, `run_stride` bytes apart; block b starts at
// base + b * block_stride. This covers every vLLM layout:
//   block-major, block-contiguous ([B, H, N, C] / (num_blocks, 2, ...)): num_runs = 1;
//   kv-major ((2, num_blocks, ...), FlashAttention's legacy shape): num_runs = 2, run_stride = the
//   K-to-V plane distance; head-outer ([L, H, B, N, C]): num_runs = H;
//   layer-interleaved ([B, L, ...]): block_stride = L * page.
struct LayerSpec {
  std::uintptr_t base = 0;
  std::int64_t num_blocks = 0;
  std::int64_t block_stride = 0;
  std::int64_t num_runs = 1;
  std::int64_t run_bytes = 0;
  std::int64_t run_stride = 0;

  std::int64_t block_bytes() const { return num_runs * run_bytes; }
};

// Checks a layer and merges fragments that touch (run_stride == run_bytes) into one run.
LayerSpec normalize_layer(const LayerSpec& spec, std::size_t index);

enum class Direction : std::uint8_t { kOut = 0, kIn = 1 };
enum class Status : std::uint8_t { kPending = 0, kDone = 1, kFailed = 2, kAborted = 3 };

const char* to_string(Direction direction);
const char* to_string(Status status);

// Whatever keeps the device memory the layers point into alive (Python: the KV cache tensors).
// The engine copies through raw addresses, so it holds this and lets go only once no copy can
// touch the memory: backends stop their copies in their own destructors, which run before the
// SwapEngine base (and so this reference) is destroyed. Empty when the caller guarantees the
// memory outlives the engine.
using MemoryOwner = std::shared_ptr<const void>;

// One finished transfer, as poll() reports it.
struct Completion {
  std::string request_id;
  Direction direction = Direction::kOut;
  Status status = Status::kDone;
  std::string error;
};

// A run of `count` consecutive device blocks paired with `count` consecutive host blocks: one
// copy (per layer and fragment) instead of `count`.
struct CopyRun {
  std::int64_t device_block = 0;
  std::int64_t host_block = 0;
  std::int64_t count = 0;
};

// Pairs device_blocks[i] with host_blocks[i] and merges neighbours that are consecutive on both
// sides, keeping the request's block order.
std::vector<CopyRun> coalesce(const std::vector<std::int64_t>& device_blocks,
                              const std::vector<std::int64_t>& host_blocks);

// One submitted copy of one request in one direction. Backends derive from it to keep their
// per-transfer handles (CUDA events).
struct Transfer {
  std::string request_id;
  Direction direction = Direction::kOut;
  std::vector<CopyRun> runs;
  std::int64_t bytes = 0;

  // Guarded by `mutex`: progress as the copier reports it.
  std::mutex mutex;
  std::condition_variable cv;
  int layers_done = 0;
  bool finished = false;
  Status status = Status::kPending;
  bool abort_requested = false;

  virtual ~Transfer() = default;
};

// Counters since construction.
struct EngineStats {
  std::int64_t swap_outs = 0;
  std::int64_t swap_ins = 0;
  std::int64_t bytes_out = 0;
  std::int64_t bytes_in = 0;
  std::int64_t failed = 0;
  std::int64_t aborted = 0;
  std::int64_t copy_calls = 0;
};

// The request-keyed engine. A request's host copy is created by swap_out (which allocates its host
// blocks), consumed by a completed swap_in (which frees them) or dropped by release(). Host blocks
// are never returned to the pool while a copy still touches them, so abort() and release() of an
// in-flight transfer are safe: the blocks come back when the copy has stopped.
// Thread safety: every public method may be called from any thread.
class SwapEngine {
 public:
  SwapEngine(std::vector<LayerSpec> layers, std::int64_t num_host_blocks,
             MemoryOwner memory_owner = nullptr);
  // Derived destructors must stop every copy (join copier threads, synchronize streams) before
  // this one releases the memory owner.
  virtual ~SwapEngine() = default;
  SwapEngine(const SwapEngine&) = delete;
  SwapEngine& operator=(const SwapEngine&) = delete;

  virtual const char* backend() const = 0;

  std::int64_t num_layers() const { return static_cast<std::int64_t>(layers_.size()); }
  std::int64_t num_host_blocks() const { return num_host_blocks_; }
  std::int64_t num_free_host_blocks() const;
  // Bytes one host block holds: one device block of every layer.
  std::int64_t host_block_bytes() const { return host_block_bytes_; }
  const std::vector<LayerSpec>& layers() const { return layers_; }

  // Starts copying `device_blocks` (in the request's block order) to newly allocated host blocks.
  // `stream`: the CUDA stream whose queued work must finish before the copy reads the blocks
  // (0 = legacy default stream); ignored by the CPU backend.
  // Throws PoolExhausted, std::invalid_argument (bad block ids), SwapError (request already has a
  // host copy or a transfer in flight).
  void swap_out(const std::string& request_id, const std::vector<std::int64_t>& device_blocks,
                std::uintptr_t stream = 0);

  // Starts copying the request's stored blocks [first_block, first_block + n) into
  // `device_blocks` (n = its size). `first_block` skips blocks the device still holds (a prefix
  // cache hit). The host copy is freed when the copy completes.
  // Throws UnknownRequest, std::invalid_argument, SwapError (swap-out not finished, or in flight).
  void swap_in(const std::string& request_id, const std::vector<std::int64_t>& device_blocks,
               std::int64_t first_block = 0, std::uintptr_t stream = 0);

  // Finished transfers since the last call. Never blocks on a copy.
  std::vector<Completion> poll();

  // Whether layer `layer` of the request's in-flight transfer has landed (true when nothing is
  // in flight for it). Never blocks.
  bool layer_ready(const std::string& request_id, std::int64_t layer);
  // Blocks until layer `layer` of the in-flight transfer has landed (or the transfer ended). On
  // CUDA with `stream` != 0 it only makes `stream` wait (InferCept's pipelined swap-in: the
  // forward pass of layer i waits for layer i's copy, not for the whole request).
  void wait_layer(const std::string& request_id, std::int64_t layer, std::uintptr_t stream = 0);
  // Blocks until the request's in-flight transfer (if any) has ended.
  void wait(const std::string& request_id);

  // Stops the request's in-flight transfer; reported by poll() as kAborted once the copier has
  // let go of the blocks (a CUDA copy already queued runs to its end first). An aborted
  // swap-out drops the host copy; an aborted swap-in keeps it (the device blocks hold garbage).
  // Returns false when nothing was in flight.
  bool abort(const std::string& request_id);
  // Drops the request's host copy; aborts its in-flight transfer first. Returns false when the
  // engine held nothing for the request.
  bool release(const std::string& request_id);

  // Number of blocks in the request's host copy (0 when it has none).
  std::int64_t stored_blocks(const std::string& request_id) const;
  // Whether the request's host copy is complete (swap-out done and not consumed).
  bool has_copy(const std::string& request_id) const;
  bool in_flight(const std::string& request_id) const;
  std::int64_t num_in_flight() const;
  EngineStats stats() const;

 protected:
  // Backend hooks. launch() is called with the engine lock held and must not call back into the
  // public API; the copier later calls finish() (from any thread, without holding t.mutex).
  virtual std::shared_ptr<Transfer> make_transfer() { return std::make_shared<Transfer>(); }
  virtual void launch(const std::shared_ptr<Transfer>& transfer, std::uintptr_t stream) = 0;
  // Poll-driven backends (CUDA) detect completions here; called without the engine lock.
  virtual void progress() {}
  // Backend side of layer_ready/wait_layer/wait for transfers it tracks without a copier thread.
  virtual bool backend_layer_ready(Transfer& transfer, std::int64_t layer);
  virtual void backend_wait_layer(Transfer& transfer, std::int64_t layer, std::uintptr_t stream);
  virtual void backend_wait(Transfer& transfer);
  // The backend asks the copier to stop; default: flag it for the copier thread to see.
  virtual void backend_abort(Transfer& transfer);

  // Called by the backend when a transfer ended (done, failed or aborted).
  void finish(const std::shared_ptr<Transfer>& transfer, Status status, const std::string& error);
  // Called by copiers as layers land.
  static void mark_layer_done(Transfer& transfer, int layers_done);

  // Host address of (layer, fragment, host block): host pool is layer-major, then fragment-major,
  // so consecutive host blocks of one fragment are contiguous.
  std::byte* host_address(std::size_t layer, std::int64_t run, std::int64_t host_block) const;
  std::uintptr_t device_address(std::size_t layer, std::int64_t run, std::int64_t device_block) const;

  // Set by the backend constructor once it has allocated host_pool_bytes() of host memory.
  void set_host_pool(std::byte* base) { host_base_ = base; }
  std::int64_t host_pool_bytes() const { return host_block_bytes_ * num_host_blocks_; }

  void count_copy_calls(std::int64_t calls);

 private:
  struct Entry {
    std::vector<std::int64_t> host_blocks;
    bool copy_valid = false;
    bool release_pending = false;
    std::shared_ptr<Transfer> active;
  };

  std::vector<std::int64_t> allocate_locked(std::int64_t count);
  void free_locked(const std::vector<std::int64_t>& blocks);
  void check_device_blocks(const std::vector<std::int64_t>& device_blocks, const char* field) const;
  std::shared_ptr<Transfer> active_transfer(const std::string& request_id) const;

  // Declared first, so destroyed last of the engine's state.
  MemoryOwner memory_owner_;
  std::vector<LayerSpec> layers_;
  std::vector<std::int64_t> layer_offsets_;
  std::int64_t num_host_blocks_ = 0;
  std::int64_t host_block_bytes_ = 0;
  std::int64_t min_device_blocks_ = 0;
  std::byte* host_base_ = nullptr;

  mutable std::mutex mutex_;
  std::set<std::int64_t> free_blocks_;
  std::unordered_map<std::string, Entry> entries_;
  std::deque<Completion> completed_;
  EngineStats stats_;
};

}  // namespace lamps::swap
