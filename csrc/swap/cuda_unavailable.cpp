#include "lamps/swap/cuda_engine.hpp"

namespace lamps::swap {

CudaStatus cuda_status() {
  return CudaStatus{false, false,
                    "the CUDA backend was not built (no CUDA toolkit found at build time, or "
                    "LAMPS_WITH_CUDA=OFF)"};
}

std::unique_ptr<SwapEngine> make_cuda_engine(std::vector<LayerSpec>, std::int64_t, int,
                                             MemoryOwner) {
  throw SwapError(cuda_status().reason);
}

}  // namespace lamps::swap
