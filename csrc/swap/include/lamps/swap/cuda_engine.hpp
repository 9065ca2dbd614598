#pragma once
// CUDA backend of the swap engine, declared without CUDA types so the bindings and tests compile
// with or without a toolkit. Built from cuda_engine.cu when CMake finds CUDA, otherwise from
// cuda_unavailable.cpp, which reports why it is missing.
#include <memory>
#include <string>

#include "lamps/swap/engine.hpp"

namespace lamps::swap {

struct CudaStatus {
  bool built = false;   // this extension was compiled with the CUDA backend
  bool usable = false;  // and a CUDA device can be used now
  std::string reason;   // why not, when !usable
};

// Never throws: probes the runtime (statically linked) for a usable device.
CudaStatus cuda_status();

// A pinned host pool (cudaHostAlloc) and two non-blocking streams (out, in) on `device`.
// Throws SwapError when the backend is not built or no device is usable.
std::unique_ptr<SwapEngine> make_cuda_engine(std::vector<LayerSpec> layers,
                                             std::int64_t num_host_blocks, int device,
                                             MemoryOwner memory_owner = nullptr);

}  // namespace lamps::swap
