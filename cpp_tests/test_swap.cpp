// CPU swap engine end to end: the "device" KV cache is a host buffer shaped like vLLM's caches.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "lamps/swap/cpu_engine.hpp"
#include "lamps/swap/cuda_engine.hpp"

namespace {

using lamps::swap::Completion;
using lamps::swap::CpuSwapEngine;
using lamps::swap::Direction;
using lamps::swap::LayerSpec;
using lamps::swap::Status;

// A fake device KV cache: `layers` caches of `num_blocks` blocks of `block_bytes` bytes, random.
struct FakeCache {
  std::vector<std::vector<std::uint8_t>> layers;
  std::int64_t num_blocks;
  std::int64_t block_bytes;

  FakeCache(int num_layers, std::int64_t blocks, std::int64_t bytes, unsigned seed)
      : num_blocks(blocks), block_bytes(bytes) {
    std::mt19937 rng(seed);
    for (int l = 0; l < num_layers; ++l) {
      std::vector<std::uint8_t> data(static_cast<std::size_t>(blocks * bytes));
      for (auto& b : data) b = static_cast<std::uint8_t>(rng());
      layers.push_back(std::move(data));
    }
  }

  std::vector<LayerSpec> specs() {
    std::vector<LayerSpec> out;
    for (auto& data : layers) {
      LayerSpec s;
      s.base = reinterpret_cast<std::uintptr_t>(data.data());
      s.num_blocks = num_blocks;
      s.block_stride = block_bytes;
      s.run_bytes = block_bytes;
      out.push_back(s);
    }
    return out;
  }

  std::vector<std::uint8_t> block(int layer, std::int64_t b) const {
    auto begin = layers[static_cast<std::size_t>(layer)].begin() + b * block_bytes;
    return {begin, begin + block_bytes};
  }

  void scribble(std::int64_t b) {
    for (auto& data : layers) std::memset(data.data() + b * block_bytes, 0xAB, block_bytes);
  }
};

std::vector<Completion> poll_until(lamps::swap::SwapEngine& engine, std::size_t count) {
  std::vector<Completion> all;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (all.size() < count && std::chrono::steady_clock::now() < deadline) {
    for (auto& c : engine.poll()) all.push_back(std::move(c));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return all;
}

TEST(SwapCoalesce, MergesRunsConsecutiveOnBothSides) {
  auto runs = lamps::swap::coalesce({4, 5, 6, 9, 10, 2}, {0, 1, 2, 3, 7, 8});
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].device_block, 4);
  EXPECT_EQ(runs[0].count, 3);
  EXPECT_EQ(runs[1].device_block, 9);
  EXPECT_EQ(runs[1].count, 1);
  EXPECT_EQ(runs[2].host_block, 7);
  EXPECT_EQ(runs[3].device_block, 2);
  EXPECT_THROW(lamps::swap::coalesce({1, 2}, {1}), std::invalid_argument);
}

TEST(SwapLayerSpec, MergesTouchingFragmentsAndRejectsOverlap) {
  LayerSpec s{0x1000, 8, 64, 2, 32, 32};
  auto n = lamps::swap::normalize_layer(s, 0);
  EXPECT_EQ(n.num_runs, 1);
  EXPECT_EQ(n.run_bytes, 64);
  LayerSpec overlapping{0x1000, 8, 16, 1, 32, 0};
  EXPECT_THROW(lamps::swap::normalize_layer(overlapping, 3), std::invalid_argument);
  LayerSpec null_base{0, 8, 64, 1, 64, 0};
  EXPECT_THROW(lamps::swap::normalize_layer(null_base, 0), std::invalid_argument);
}

TEST(CpuSwapEngine, RoundTripIsBitExact) {
  FakeCache cache(3, 32, 256, 1);
  CpuSwapEngine engine(cache.specs(), 16);
  EXPECT_EQ(engine.host_block_bytes(), 3 * 256);
  const std::vector<std::int64_t> blocks = {7, 8, 9, 2, 30};
  std::vector<std::vector<std::uint8_t>> before;
  for (int l = 0; l < 3; ++l)
    for (auto b : blocks) before.push_back(cache.block(l, b));

  engine.swap_out("r1", blocks);
  engine.wait("r1");
  auto done = engine.poll();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, Status::kDone);
  EXPECT_EQ(done[0].direction, Direction::kOut);
  EXPECT_TRUE(engine.has_copy("r1"));
  EXPECT_EQ(engine.num_free_host_blocks(), 11);

  for (auto b : blocks) cache.scribble(b);
  const std::vector<std::int64_t> targets = {0, 1, 2, 3, 4};
  engine.swap_in("r1", targets);
  engine.wait("r1");
  done = engine.poll();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, Status::kDone);
  std::size_t i = 0;
  for (int l = 0; l < 3; ++l)
    for (auto b : targets) EXPECT_EQ(cache.block(l, b), before[i++]) << "layer " << l;
  // The swap-in consumed the copy and returned its blocks.
  EXPECT_FALSE(engine.has_copy("r1"));
  EXPECT_EQ(engine.num_free_host_blocks(), 16);
  EXPECT_EQ(engine.stats().bytes_out, 5 * 3 * 256);
}

TEST(CpuSwapEngine, StridedFragmentsRoundTrip) {
  // kv-major layout (2, num_blocks, page): a block is two fragments a plane apart.
  const std::int64_t num_blocks = 10, page = 64;
  std::vector<std::uint8_t> kv(static_cast<std::size_t>(2 * num_blocks * page));
  std::mt19937 rng(7);
  for (auto& b : kv) b = static_cast<std::uint8_t>(rng());
  const std::vector<std::uint8_t> original = kv;
  LayerSpec s{reinterpret_cast<std::uintptr_t>(kv.data()), num_blocks, page, 2, page,
              num_blocks * page};
  CpuSwapEngine engine({s}, 4);
  engine.swap_out("r", {3, 4, 8});
  engine.wait("r");
  ASSERT_EQ(engine.poll().at(0).status, Status::kDone);
  std::memset(kv.data(), 0, kv.size());
  engine.swap_in("r", {3, 4, 8});
  engine.wait("r");
  ASSERT_EQ(engine.poll().at(0).status, Status::kDone);
  for (std::int64_t plane = 0; plane < 2; ++plane) {
    for (std::int64_t b : {3, 4, 8}) {
      const std::size_t off = static_cast<std::size_t>(plane * num_blocks * page + b * page);
      EXPECT_EQ(0, std::memcmp(kv.data() + off, original.data() + off, page));
    }
    EXPECT_EQ(kv[static_cast<std::size_t>(plane * num_blocks * page)], 0);  // block 0 untouched
  }
}

TEST(CpuSwapEngine, PartialSwapInSkipsCachedPrefix) {
  FakeCache cache(2, 16, 128, 3);
  CpuSwapEngine engine(cache.specs(), 8);
  auto b5 = cache.block(1, 5);
  engine.swap_out("r", {1, 3, 5});
  engine.wait("r");
  engine.poll();
  engine.swap_in("r", {10}, /*first_block=*/2);
  engine.wait("r");
  ASSERT_EQ(engine.poll().at(0).status, Status::kDone);
  EXPECT_EQ(cache.block(1, 10), b5);
  EXPECT_THROW(engine.swap_in("r", {1}), lamps::swap::UnknownRequest);
}

TEST(CpuSwapEngine, ManyConcurrentRequests) {
  FakeCache cache(4, 256, 512, 11);
  CpuSwapEngine engine(cache.specs(), 256);
  const int requests = 32;
  std::vector<std::vector<std::uint8_t>> before;
  for (int r = 0; r < requests; ++r) {
    std::vector<std::int64_t> blocks;
    for (int k = 0; k < 8; ++k) blocks.push_back(r * 8 + k);
    before.push_back(cache.block(2, r * 8 + 7));
    engine.swap_out("req-" + std::to_string(r), blocks);
  }
  auto out = poll_until(engine, requests);
  ASSERT_EQ(out.size(), static_cast<std::size_t>(requests));
  for (const auto& c : out) EXPECT_EQ(c.status, Status::kDone) << c.request_id;
  EXPECT_EQ(engine.num_free_host_blocks(), 0);
  for (int r = 0; r < requests; ++r) cache.scribble(r * 8 + 7);
  // Swap back in reverse order, into the same places.
  for (int r = requests - 1; r >= 0; --r) {
    std::vector<std::int64_t> blocks;
    for (int k = 0; k < 8; ++k) blocks.push_back(r * 8 + k);
    engine.swap_in("req-" + std::to_string(r), blocks);
  }
  auto in = poll_until(engine, requests);
  ASSERT_EQ(in.size(), static_cast<std::size_t>(requests));
  for (int r = 0; r < requests; ++r) EXPECT_EQ(cache.block(2, r * 8 + 7), before[r]);
  EXPECT_EQ(engine.num_free_host_blocks(), 256);
}

TEST(CpuSwapEngine, PoolExhaustionAllocatesNothing) {
  FakeCache cache(1, 16, 64, 5);
  CpuSwapEngine engine(cache.specs(), 4);
  engine.swap_out("a", {0, 1, 2});
  EXPECT_THROW(engine.swap_out("b", {3, 4}), lamps::swap::PoolExhausted);
  EXPECT_FALSE(engine.in_flight("b"));
  engine.wait("a");
  EXPECT_EQ(engine.num_free_host_blocks(), 1);
  engine.swap_out("c", {5});
  engine.wait("c");
  EXPECT_EQ(engine.num_free_host_blocks(), 0);
  EXPECT_TRUE(engine.release("a"));
  EXPECT_EQ(engine.num_free_host_blocks(), 3);
}

TEST(CpuSwapEngine, BadInputIsRejected) {
  FakeCache cache(1, 16, 64, 5);
  CpuSwapEngine engine(cache.specs(), 8);
  EXPECT_THROW(engine.swap_out("r", {}), std::invalid_argument);
  EXPECT_THROW(engine.swap_out("r", {16}), std::invalid_argument);
  EXPECT_THROW(engine.swap_out("r", {-1}), std::invalid_argument);
  EXPECT_THROW(engine.swap_out("r", {2, 2}), std::invalid_argument);
  EXPECT_THROW(engine.swap_in("missing", {1}), lamps::swap::UnknownRequest);
  EXPECT_EQ(engine.num_free_host_blocks(), 8);
  engine.set_paused(true);
  engine.swap_out("r", {1, 2});
  EXPECT_THROW(engine.swap_out("r", {3}), lamps::swap::SwapError);      // double swap-out
  EXPECT_THROW(engine.swap_in("r", {3, 4}), lamps::swap::SwapError);    // still in flight
  engine.set_paused(false);
  engine.wait("r");
  EXPECT_THROW(engine.swap_in("r", {3, 4, 5}), std::invalid_argument);  // more than stored
  EXPECT_THROW(engine.layer_ready("r", 1), std::invalid_argument);
  EXPECT_THROW(CpuSwapEngine({}, 4), std::invalid_argument);
  EXPECT_THROW(CpuSwapEngine(cache.specs(), 0), std::invalid_argument);
}

TEST(CpuSwapEngine, PollDoesNotBlockAndLayersLandInOrder) {
  FakeCache cache(4, 16, 64, 9);
  CpuSwapEngine engine(cache.specs(), 8);
  engine.set_paused(true);
  engine.swap_out("r", {1, 2, 3});
  EXPECT_TRUE(engine.poll().empty());
  EXPECT_TRUE(engine.in_flight("r"));
  EXPECT_FALSE(engine.layer_ready("r", 0));
  engine.set_paused(false);
  engine.wait_layer("r", 2);
  EXPECT_TRUE(engine.layer_ready("r", 0));
  EXPECT_TRUE(engine.layer_ready("r", 2));
  engine.wait("r");
  EXPECT_EQ(engine.poll().size(), 1u);
}

TEST(CpuSwapEngine, AbortBeforeCopyFreesBlocksOnlyAfterCopierLetsGo) {
  FakeCache cache(2, 16, 64, 13);
  CpuSwapEngine engine(cache.specs(), 4);
  engine.set_paused(true);
  engine.swap_out("r", {1, 2, 3});
  EXPECT_TRUE(engine.abort("r"));
  // The copier still owns the transfer: its blocks are not back yet.
  EXPECT_EQ(engine.num_free_host_blocks(), 1);
  engine.set_paused(false);
  auto done = poll_until(engine, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, Status::kAborted);
  EXPECT_EQ(engine.num_free_host_blocks(), 4);
  EXPECT_FALSE(engine.has_copy("r"));
  EXPECT_FALSE(engine.abort("r"));
  EXPECT_EQ(engine.stats().aborted, 1);
}

TEST(CpuSwapEngine, AbortedSwapInKeepsTheCopyForARetry) {
  FakeCache cache(2, 16, 64, 17);
  CpuSwapEngine engine(cache.specs(), 4);
  const auto original = cache.block(1, 4);
  engine.swap_out("r", {4});
  engine.wait("r");
  engine.poll();
  cache.scribble(4);
  engine.set_paused(true);
  engine.swap_in("r", {4});
  engine.abort("r");
  engine.set_paused(false);
  auto done = poll_until(engine, 1);
  ASSERT_EQ(done.at(0).status, Status::kAborted);
  EXPECT_TRUE(engine.has_copy("r"));
  engine.swap_in("r", {4});
  engine.wait("r");
  EXPECT_EQ(cache.block(1, 4), original);
}

TEST(CpuSwapEngine, AbortRacingALargeCopyNeverLeaksOrCrashes) {
  FakeCache cache(8, 64, 64 * 1024, 19);
  CpuSwapEngine engine(cache.specs(), 64);
  for (int round = 0; round < 20; ++round) {
    engine.swap_out("r", {0, 5, 9, 20, 33, 40, 63});
    std::this_thread::sleep_for(std::chrono::microseconds(50 * round));
    engine.release("r");
    auto done = poll_until(engine, 1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_TRUE(done[0].status == Status::kAborted || done[0].status == Status::kDone);
    EXPECT_EQ(engine.num_free_host_blocks(), 64);
    EXPECT_FALSE(engine.has_copy("r"));
  }
}

TEST(CpuSwapEngine, DestructorDrainsInFlightTransfers) {
  FakeCache cache(2, 16, 64, 23);
  auto engine = std::make_unique<CpuSwapEngine>(cache.specs(), 4);
  engine->set_paused(true);
  engine->swap_out("r", {1, 2});
  engine.reset();  // must not hang or touch freed memory
  SUCCEED();
}

// Threads of this process (Linux): the copier threads an engine has not joined yet show here.
std::ptrdiff_t thread_count() {
  const std::filesystem::directory_iterator tasks("/proc/self/task");
  return std::distance(std::filesystem::begin(tasks), std::filesystem::end(tasks));
}

// Regression: an engine dropped with a copy in flight must not let the KV cache it copies be
// freed before its copiers stop (Python freed the tensors first: heap-use-after-free, SIGSEGV).
// The engine owns the memory's owner and releases it only after its copier threads are joined.
TEST(CpuSwapEngine, KeepsTheDeviceMemoryAliveUntilItsCopiersAreJoined) {
#ifndef __linux__
  GTEST_SKIP() << "counts threads through /proc/self/task";
#endif
  const std::ptrdiff_t threads_before = thread_count();
  std::ptrdiff_t threads_at_release = -1;
  auto* cache = new FakeCache(8, 64, 64 * 1024, 29);  // 32 MiB: still copying when dropped
  std::vector<LayerSpec> specs = cache->specs();
  std::shared_ptr<const void> owner(cache, [&threads_at_release](const FakeCache* c) {
    threads_at_release = thread_count();
    delete c;
  });
  const std::weak_ptr<const void> watch = owner;
  auto engine = std::make_unique<CpuSwapEngine>(std::move(specs), 64, std::move(owner));
  EXPECT_EQ(thread_count(), threads_before + 2);  // the two copiers
  std::vector<std::int64_t> all(64);
  for (std::int64_t b = 0; b < 64; ++b) all[static_cast<std::size_t>(b)] = b;
  engine->swap_out("r", all);
  EXPECT_FALSE(watch.expired()) << "the engine must keep the KV cache it copies alive";
  engine.reset();
  EXPECT_TRUE(watch.expired());
  EXPECT_EQ(threads_at_release, threads_before) << "memory released before the copiers stopped";
}

TEST(CudaSwapEngine, ReportsWhyItIsUnavailableOrRoundTrips) {
  const auto status = lamps::swap::cuda_status();
#ifndef LAMPS_SWAP_WITH_CUDA
  EXPECT_FALSE(status.built);
  EXPECT_THROW(lamps::swap::make_cuda_engine({}, 1, 0), lamps::swap::SwapError);
  GTEST_SKIP() << "CUDA backend not built: " << status.reason;
#else
  EXPECT_TRUE(status.built);
  if (!status.usable) GTEST_SKIP() << "no usable GPU: " << status.reason;
  // With a GPU the round trip is tested from Python (python_tests/test_swap_cuda.py), where torch
  // allocates the device KV cache.
  SUCCEED();
#endif
}

}  // namespace
