// lamps._swap: the swap engine for Python. Thin: the engine takes raw addresses and block ids;
// lamps/swap.py derives layer specs from torch tensors and hands the engine the tensors to own.
// Arguments are taken as Arg<T> (lamps/python/args.hpp): a value of the wrong type raises a
// TypeError naming the argument. Blocking calls convert first, then release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "lamps/python/args.hpp"
#include "lamps/swap/cpu_engine.hpp"
#include "lamps/swap/cuda_engine.hpp"
#include "lamps/swap/engine.hpp"

namespace py = pybind11;
using lamps::python::Arg;
using lamps::swap::Completion;
using lamps::swap::CpuSwapEngine;
using lamps::swap::EngineStats;
using lamps::swap::LayerSpec;
using lamps::swap::SwapEngine;

namespace {

// The engine's reference to the Python object that owns its device memory (the KV cache
// tensors). The engine may drop it from a thread that does not hold the GIL, so the release
// takes it.
lamps::swap::MemoryOwner memory_owner(py::object owner) {
  if (owner.is_none()) return nullptr;
  return lamps::swap::MemoryOwner(owner.release().ptr(), [](PyObject* held) {
    py::gil_scoped_acquire gil;
    Py_DECREF(held);
  });
}

using RequestId = Arg<std::string>;
using Blocks = Arg<std::vector<std::int64_t>>;
using Stream = Arg<std::uintptr_t>;
using Layers = Arg<std::vector<LayerSpec>>;

}  // namespace

PYBIND11_MODULE(_swap, m) {
  m.doc() = "LAMPS KV swap engine (CPU and CUDA backends)";
  m.attr("__version__") = LAMPS_VERSION;

  py::register_exception<lamps::swap::SwapError>(m, "SwapError", PyExc_RuntimeError);
  // Registered after SwapError so pybind11 tries the derived types first.
  py::register_exception<lamps::swap::PoolExhausted>(m, "PoolExhaustedError", PyExc_MemoryError);
  py::register_exception<lamps::swap::UnknownRequest>(m, "UnknownRequestError", PyExc_KeyError);

  py::class_<LayerSpec>(m, "LayerSpec")
      .def(py::init([](const Arg<std::uintptr_t>& base, const Arg<std::int64_t>& num_blocks,
                       const Arg<std::int64_t>& block_stride, const Arg<std::int64_t>& run_bytes,
                       const Arg<std::int64_t>& num_runs, const Arg<std::int64_t>& run_stride) {
             LayerSpec spec;
             spec.base = base.get("base");
             spec.num_blocks = num_blocks.get("num_blocks");
             spec.block_stride = block_stride.get("block_stride");
             spec.run_bytes = run_bytes.get("run_bytes");
             spec.num_runs = num_runs.get("num_runs");
             spec.run_stride = run_stride.get("run_stride");
             return spec;
           }),
           py::arg("base"), py::arg("num_blocks"), py::arg("block_stride"), py::arg("run_bytes"),
           py::arg("num_runs") = 1, py::arg("run_stride") = 0)
      .def_readonly("base", &LayerSpec::base)
      .def_readonly("num_blocks", &LayerSpec::num_blocks)
      .def_readonly("block_stride", &LayerSpec::block_stride)
      .def_readonly("run_bytes", &LayerSpec::run_bytes)
      .def_readonly("num_runs", &LayerSpec::num_runs)
      .def_readonly("run_stride", &LayerSpec::run_stride)
      .def_property_readonly("block_bytes", &LayerSpec::block_bytes)
      .def("__repr__", [](const LayerSpec& s) {
        return "LayerSpec(num_blocks=" + std::to_string(s.num_blocks) +
               ", block_stride=" + std::to_string(s.block_stride) +
               ", run_bytes=" + std::to_string(s.run_bytes) +
               ", num_runs=" + std::to_string(s.num_runs) +
               ", run_stride=" + std::to_string(s.run_stride) + ")";
      });

  py::class_<Completion>(m, "Completion")
      .def_readonly("request_id", &Completion::request_id)
      .def_property_readonly("direction",
                             [](const Completion& c) { return lamps::swap::to_string(c.direction); })
      .def_property_readonly("status",
                             [](const Completion& c) { return lamps::swap::to_string(c.status); })
      .def_readonly("error", &Completion::error)
      .def("__repr__", [](const Completion& c) {
        return std::string("Completion(request_id='") + c.request_id + "', direction='" +
               lamps::swap::to_string(c.direction) + "', status='" +
               lamps::swap::to_string(c.status) + "')";
      });

  py::class_<EngineStats>(m, "EngineStats")
      .def_readonly("swap_outs", &EngineStats::swap_outs)
      .def_readonly("swap_ins", &EngineStats::swap_ins)
      .def_readonly("bytes_out", &EngineStats::bytes_out)
      .def_readonly("bytes_in", &EngineStats::bytes_in)
      .def_readonly("failed", &EngineStats::failed)
      .def_readonly("aborted", &EngineStats::aborted)
      .def_readonly("copy_calls", &EngineStats::copy_calls);

  py::class_<SwapEngine>(m, "SwapEngine")
      .def_property_readonly("backend", &SwapEngine::backend)
      .def_property_readonly("num_layers", &SwapEngine::num_layers)
      .def_property_readonly("num_host_blocks", &SwapEngine::num_host_blocks)
      .def_property_readonly("num_free_host_blocks", &SwapEngine::num_free_host_blocks)
      .def_property_readonly("host_block_bytes", &SwapEngine::host_block_bytes)
      .def_property_readonly("layers", &SwapEngine::layers)
      .def(
          "swap_out",
          [](SwapEngine& engine, const RequestId& request_id, const Blocks& device_blocks,
             const Stream& stream) {
            const std::string id = request_id.get("request_id");
            const std::vector<std::int64_t> blocks = device_blocks.get("device_blocks");
            const std::uintptr_t on = stream.get("stream");
            py::gil_scoped_release release;
            engine.swap_out(id, blocks, on);
          },
          py::arg("request_id"), py::arg("device_blocks"), py::arg("stream") = 0)
      .def(
          "swap_in",
          [](SwapEngine& engine, const RequestId& request_id, const Blocks& device_blocks,
             const Arg<std::int64_t>& first_block, const Stream& stream) {
            const std::string id = request_id.get("request_id");
            const std::vector<std::int64_t> blocks = device_blocks.get("device_blocks");
            const std::int64_t first = first_block.get("first_block");
            const std::uintptr_t on = stream.get("stream");
            py::gil_scoped_release release;
            engine.swap_in(id, blocks, first, on);
          },
          py::arg("request_id"), py::arg("device_blocks"), py::arg("first_block") = 0,
          py::arg("stream") = 0)
      .def("poll", &SwapEngine::poll, py::call_guard<py::gil_scoped_release>())
      .def(
          "layer_ready",
          [](SwapEngine& engine, const RequestId& request_id, const Arg<std::int64_t>& layer) {
            return engine.layer_ready(request_id.get("request_id"), layer.get("layer"));
          },
          py::arg("request_id"), py::arg("layer"))
      .def(
          "wait_layer",
          [](SwapEngine& engine, const RequestId& request_id, const Arg<std::int64_t>& layer,
             const Stream& stream) {
            const std::string id = request_id.get("request_id");
            const std::int64_t index = layer.get("layer");
            const std::uintptr_t on = stream.get("stream");
            py::gil_scoped_release release;
            engine.wait_layer(id, index, on);
          },
          py::arg("request_id"), py::arg("layer"), py::arg("stream") = 0)
      .def(
          "wait",
          [](SwapEngine& engine, const RequestId& request_id) {
            const std::string id = request_id.get("request_id");
            py::gil_scoped_release release;
            engine.wait(id);
          },
          py::arg("request_id"))
      .def(
          "abort",
          [](SwapEngine& engine, const RequestId& request_id) {
            return engine.abort(request_id.get("request_id"));
          },
          py::arg("request_id"))
      .def(
          "release",
          [](SwapEngine& engine, const RequestId& request_id) {
            return engine.release(request_id.get("request_id"));
          },
          py::arg("request_id"))
      .def(
          "stored_blocks",
          [](const SwapEngine& engine, const RequestId& request_id) {
            return engine.stored_blocks(request_id.get("request_id"));
          },
          py::arg("request_id"))
      .def(
          "has_copy",
          [](const SwapEngine& engine, const RequestId& request_id) {
            return engine.has_copy(request_id.get("request_id"));
          },
          py::arg("request_id"))
      .def(
          "in_flight",
          [](const SwapEngine& engine, const RequestId& request_id) {
            return engine.in_flight(request_id.get("request_id"));
          },
          py::arg("request_id"))
      .def_property_readonly("num_in_flight", &SwapEngine::num_in_flight)
      .def("stats", &SwapEngine::stats);

  py::class_<CpuSwapEngine, SwapEngine>(m, "CpuSwapEngine")
      .def(py::init([](const Layers& layers, const Arg<std::int64_t>& num_host_blocks,
                       py::object owner) {
             return std::make_unique<CpuSwapEngine>(layers.get("layers"),
                                                    num_host_blocks.get("num_host_blocks"),
                                                    memory_owner(std::move(owner)));
           }),
           py::arg("layers"), py::arg("num_host_blocks"), py::arg("memory_owner") = py::none())
      .def(
          "set_paused",
          [](CpuSwapEngine& engine, const Arg<bool>& paused) {
            engine.set_paused(paused.get("paused"));
          },
          py::arg("paused"));

  m.def(
      "make_cuda_engine",
      [](const Layers& layers, const Arg<std::int64_t>& num_host_blocks, const Arg<int>& device,
         py::object owner) {
        return lamps::swap::make_cuda_engine(layers.get("layers"),
                                             num_host_blocks.get("num_host_blocks"),
                                             device.get("device"), memory_owner(std::move(owner)));
      },
      py::arg("layers"), py::arg("num_host_blocks"), py::arg("device") = 0,
      py::arg("memory_owner") = py::none());

  m.def("cuda_status", [] {
    const lamps::swap::CudaStatus status = lamps::swap::cuda_status();
    return py::make_tuple(status.built, status.usable, status.reason);
  });
}
