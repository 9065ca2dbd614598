// lamps._swap: the swap engine for Python. Thin: the engine takes raw addresses and block ids;
// lamps/swap.py derives layer specs from torch tensors and keeps the tensors alive.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "lamps/swap/cpu_engine.hpp"
#include "lamps/swap/cuda_engine.hpp"
#include "lamps/swap/engine.hpp"

namespace py = pybind11;
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

}  // namespace

PYBIND11_MODULE(_swap, m) {
  m.doc() = "LAMPS KV swap engine (CPU and CUDA backends)";

  py::register_exception<lamps::swap::SwapError>(m, "SwapError", PyExc_RuntimeError);
  // Registered after SwapError so pybind11 tries the derived types first.
  py::register_exception<lamps::swap::PoolExhausted>(m, "PoolExhaustedError", PyExc_MemoryError);
  py::register_exception<lamps::swap::UnknownRequest>(m, "UnknownRequestError", PyExc_KeyError);

  py::class_<LayerSpec>(m, "LayerSpec")
      .def(py::init([](std::uintptr_t base, std::int64_t num_blocks, std::int64_t block_stride,
                       std::int64_t run_bytes, std::int64_t num_runs, std::int64_t run_stride) {
             LayerSpec spec;
             spec.base = base;
             spec.num_blocks = num_blocks;
             spec.block_stride = block_stride;
             spec.run_bytes = run_bytes;
             spec.num_runs = num_runs;
             spec.run_stride = run_stride;
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
      .def("swap_out", &SwapEngine::swap_out, py::arg("request_id"), py::arg("device_blocks"),
           py::arg("stream") = 0, py::call_guard<py::gil_scoped_release>())
      .def("swap_in", &SwapEngine::swap_in, py::arg("request_id"), py::arg("device_blocks"),
           py::arg("first_block") = 0, py::arg("stream") = 0,
           py::call_guard<py::gil_scoped_release>())
      .def("poll", &SwapEngine::poll, py::call_guard<py::gil_scoped_release>())
      .def("layer_ready", &SwapEngine::layer_ready, py::arg("request_id"), py::arg("layer"))
      .def("wait_layer", &SwapEngine::wait_layer, py::arg("request_id"), py::arg("layer"),
           py::arg("stream") = 0, py::call_guard<py::gil_scoped_release>())
      .def("wait", &SwapEngine::wait, py::arg("request_id"),
           py::call_guard<py::gil_scoped_release>())
      .def("abort", &SwapEngine::abort, py::arg("request_id"))
      .def("release", &SwapEngine::release, py::arg("request_id"))
      .def("stored_blocks", &SwapEngine::stored_blocks, py::arg("request_id"))
      .def("has_copy", &SwapEngine::has_copy, py::arg("request_id"))
      .def("in_flight", &SwapEngine::in_flight, py::arg("request_id"))
      .def_property_readonly("num_in_flight", &SwapEngine::num_in_flight)
      .def("stats", &SwapEngine::stats);

  py::class_<CpuSwapEngine, SwapEngine>(m, "CpuSwapEngine")
      .def(py::init([](std::vector<LayerSpec> layers, std::int64_t num_host_blocks,
                       py::object owner) {
             return std::make_unique<CpuSwapEngine>(std::move(layers), num_host_blocks,
                                                    memory_owner(std::move(owner)));
           }),
           py::arg("layers"), py::arg("num_host_blocks"), py::arg("memory_owner") = py::none())
      .def("set_paused", &CpuSwapEngine::set_paused, py::arg("paused"));

  m.def(
      "make_cuda_engine",
      [](std::vector<LayerSpec> layers, std::int64_t num_host_blocks, int device,
         py::object owner) {
        return lamps::swap::make_cuda_engine(std::move(layers), num_host_blocks, device,
                                             memory_owner(std::move(owner)));
      },
      py::arg("layers"), py::arg("num_host_blocks"), py::arg("device") = 0,
      py::arg("memory_owner") = py::none());

  m.def("cuda_status", [] {
    const lamps::swap::CudaStatus status = lamps::swap::cuda_status();
    return py::make_tuple(status.built, status.usable, status.reason);
  });
}
