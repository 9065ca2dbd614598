// pybind11 bindings of the LAMPS core: argument translation and error mapping only. Arguments
// are taken as Arg<T> (lamps/python/args.hpp) so that a value of the wrong type raises a
// TypeError naming the argument, and arrays are used in place (lamps/python/arrays.hpp).
#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "lamps/batch_state.hpp"
#include "lamps/cost_model.hpp"
#include "lamps/errors.hpp"
#include "lamps/limits.hpp"
#include "lamps/python/args.hpp"
#include "lamps/python/arrays.hpp"
#include "lamps/ranking_queue.hpp"
#include "lamps/score.hpp"
#include "lamps/score_batch.hpp"
#include "lamps/waste.hpp"

namespace py = pybind11;
using namespace pybind11::literals;
using lamps::python::Arg;
using lamps::python::array_column;
using lamps::python::column;

namespace {

std::uint64_t non_negative_count(std::int64_t value, const char* field) {
  if (value < 0) {
    throw std::invalid_argument(std::string(field) + " must be >= 0 (got " +
                                std::to_string(value) + ")");
  }
  return static_cast<std::uint64_t>(value);
}

using Request = Arg<lamps::PausedRequest>;
using Batch = Arg<lamps::BatchState>;
using Cost = Arg<lamps::CostModel>;

py::object score_batch(py::handle context_tokens, py::handle pending_prefill_tokens,
                       py::handle segment_offsets, py::handle output_tokens,
                       py::handle api_seconds, py::handle return_tokens, py::handle strategy,
                       const Batch& batch_arg, const Cost& cost_arg, const Arg<bool>& allow_swap,
                       py::object out, py::object repeat) {
  const lamps::BatchState& batch = batch_arg.get("batch");
  const lamps::CostModel& cost = cost_arg.get("cost");
  const bool swap = allow_swap.get("allow_swap");
  const py::array context = array_column<std::int64_t>(context_tokens, "context_tokens");
  const py::ssize_t n = context.shape(0);
  const lamps::RequestColumns requests{
      static_cast<const std::int64_t*>(context.data()),
      column<std::int64_t>(pending_prefill_tokens, "pending_prefill_tokens", n),
      column<std::int64_t>(segment_offsets, "segment_offsets", n + 1), static_cast<std::size_t>(n)};
  const py::array output = array_column<std::int64_t>(output_tokens, "output_tokens");
  const py::ssize_t m = output.shape(0);
  const lamps::SegmentColumns segments{static_cast<const std::int64_t*>(output.data()),
                                       column<double>(api_seconds, "api_seconds", m),
                                       column<std::int64_t>(return_tokens, "return_tokens", m),
                                       column<std::int8_t>(strategy, "strategy", m),
                                       repeat.is_none() ? nullptr : column<double>(repeat, "repeat", m),
                                       static_cast<std::size_t>(m)};
  if (out.is_none()) out = py::array_t<double>(n);
  double* scores = lamps::python::out_column<double>(out, "out", n);
  {
    py::gil_scoped_release release;
    lamps::score_batch(requests, segments, batch, cost, swap, scores);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "LAMPS scheduling core: cost model, waste, memory-over-time score, ranking queue.";
  m.attr("__version__") = LAMPS_VERSION;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const lamps::UnknownHandle& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    }
  });

  m.attr("MAX_TOKENS") = static_cast<std::int64_t>(lamps::kMaxTokens);
  m.attr("MAX_SCORE") = lamps::kMaxScore;

  py::native_enum<lamps::Strategy>(m, "Strategy", "enum.IntEnum",
                                   "How a paused request's KV cache is handled during an API call.")
      .value("PRESERVE", lamps::Strategy::Preserve, "Keep the KV cache in GPU memory.")
      .value("DISCARD", lamps::Strategy::Discard, "Free it; recompute what the prefix cache lost.")
      .value("SWAP", lamps::Strategy::Swap, "Copy it to host memory and back.")
      .finalize();

  py::class_<lamps::CostModel>(
      m, "CostModel",
      "Iteration time a*n + c ms for n tokens plus attention (prefill pairs, decode KV reads), "
      "and host-link swap time.")
      .def(py::init([](const Arg<double>& a_ms_per_token, const Arg<double>& c_ms,
                       const Arg<double>& kv_bytes_per_token,
                       const Arg<double>& link_bytes_per_second,
                       const Arg<double>& prefill_ms_per_token_pair,
                       const Arg<double>& kv_read_ms_per_token, const Arg<std::string>& name) {
             return lamps::CostModel(
                 a_ms_per_token.get("a_ms_per_token"), c_ms.get("c_ms"),
                 kv_bytes_per_token.get("kv_bytes_per_token"),
                 link_bytes_per_second.get("link_bytes_per_second"),
                 prefill_ms_per_token_pair.get("prefill_ms_per_token_pair"),
                 kv_read_ms_per_token.get("kv_read_ms_per_token"), name.get("name"));
           }),
           "a_ms_per_token"_a, "c_ms"_a, "kv_bytes_per_token"_a, "link_bytes_per_second"_a,
           py::kw_only(), "prefill_ms_per_token_pair"_a = 0.0, "kv_read_ms_per_token"_a = 0.0,
           "name"_a = "custom")
      .def_static(
          "profile", [](const Arg<std::string>& name) { return lamps::profile(name.get("name")); },
          "name"_a, "A built-in profile by name.")
      .def_static("profiles", &lamps::profile_names, "Names of the built-in profiles.")
      .def_property_readonly("a_ms_per_token", &lamps::CostModel::a_ms_per_token)
      .def_property_readonly("c_ms", &lamps::CostModel::c_ms)
      .def_property_readonly("kv_bytes_per_token", &lamps::CostModel::kv_bytes_per_token)
      .def_property_readonly("link_bytes_per_second", &lamps::CostModel::link_bytes_per_second)
      .def_property_readonly("prefill_ms_per_token_pair",
                             &lamps::CostModel::prefill_ms_per_token_pair)
      .def_property_readonly("kv_read_ms_per_token", &lamps::CostModel::kv_read_ms_per_token)
      .def_property_readonly("name", &lamps::CostModel::name)
      .def(
          "iteration_seconds",
          [](const lamps::CostModel& c, const Arg<double>& tokens) {
            return c.iteration_seconds(tokens.get("tokens"));
          },
          "tokens"_a, "Seconds of the linear part (a*n + c) of an iteration of `tokens` tokens.")
      .def(
          "swap_seconds",
          [](const lamps::CostModel& c, const Arg<double>& tokens) {
            return c.swap_seconds(tokens.get("tokens"));
          },
          "tokens"_a, "Seconds to move `tokens` tokens of KV cache one way over the host link.")
      .def("__repr__", [](const lamps::CostModel& c) {
        return "CostModel(name='" + c.name() + "', a_ms_per_token=" + lamps::describe(c.a_ms_per_token()) +
               ", c_ms=" + lamps::describe(c.c_ms()) + ", kv_bytes_per_token=" +
               lamps::describe(c.kv_bytes_per_token()) + ", link_bytes_per_second=" +
               lamps::describe(c.link_bytes_per_second()) + ", prefill_ms_per_token_pair=" +
               lamps::describe(c.prefill_ms_per_token_pair()) + ", kv_read_ms_per_token=" +
               lamps::describe(c.kv_read_ms_per_token()) + ")";
      });

  py::class_<lamps::BatchState>(m, "BatchState",
                                "The engine's token budget and its live running batch, input of "
                                "waste and score.")
      .def(py::init([](const Arg<double>& token_budget,
                       const Arg<double>& running_tokens_per_iteration,
                       const Arg<double>& running_context_tokens,
                       const Arg<double>& prefix_cache_hit_fraction,
                       const Arg<double>& iteration_seconds,
                       const Arg<double>& swap_queue_seconds) {
             return lamps::BatchState::checked(
                 token_budget.get("token_budget"),
                 running_tokens_per_iteration.get("running_tokens_per_iteration"),
                 running_context_tokens.get("running_context_tokens"),
                 prefix_cache_hit_fraction.get("prefix_cache_hit_fraction"),
                 iteration_seconds.get("iteration_seconds"),
                 swap_queue_seconds.get("swap_queue_seconds"));
           }),
           py::kw_only(), "token_budget"_a, "running_tokens_per_iteration"_a = 0.0,
           "running_context_tokens"_a = 0.0, "prefix_cache_hit_fraction"_a = 0.0,
           "iteration_seconds"_a = 0.0, "swap_queue_seconds"_a = 0.0)
      .def_readonly("token_budget", &lamps::BatchState::token_budget)
      .def_readonly("running_tokens_per_iteration", &lamps::BatchState::running_tokens_per_iteration)
      .def_readonly("running_context_tokens", &lamps::BatchState::running_context_tokens)
      .def_readonly("prefix_cache_hit_fraction", &lamps::BatchState::prefix_cache_hit_fraction)
      .def_readonly("iteration_seconds", &lamps::BatchState::iteration_seconds)
      .def_readonly("swap_queue_seconds", &lamps::BatchState::swap_queue_seconds)
      .def("__repr__", [](const lamps::BatchState& b) {
        return "BatchState(token_budget=" + lamps::describe(b.token_budget) +
               ", running_tokens_per_iteration=" + lamps::describe(b.running_tokens_per_iteration) +
               ", running_context_tokens=" + lamps::describe(b.running_context_tokens) +
               ", prefix_cache_hit_fraction=" + lamps::describe(b.prefix_cache_hit_fraction) +
               ", iteration_seconds=" + lamps::describe(b.iteration_seconds) +
               ", swap_queue_seconds=" + lamps::describe(b.swap_queue_seconds) + ")";
      });

  py::class_<lamps::PausedRequest>(m, "PausedRequest", "A request whose API call is starting.")
      .def(py::init([](const Arg<double>& context_tokens, const Arg<double>& cached_tokens,
                       const Arg<double>& api_seconds) {
             return lamps::PausedRequest::checked(context_tokens.get("context_tokens"),
                                                  cached_tokens.get("cached_tokens"),
                                                  api_seconds.get("api_seconds"));
           }),
           "context_tokens"_a, "cached_tokens"_a = 0.0, "api_seconds"_a = 0.0)
      .def_readonly("context_tokens", &lamps::PausedRequest::context_tokens)
      .def_readonly("cached_tokens", &lamps::PausedRequest::cached_tokens)
      .def_readonly("api_seconds", &lamps::PausedRequest::api_seconds);

  py::class_<lamps::Segment>(m, "Segment", "Decode output_tokens, then an optional API call.")
      .def(py::init([](const Arg<double>& output_tokens, const Arg<double>& api_seconds,
                       const Arg<double>& return_tokens,
                       const Arg<std::optional<lamps::Strategy>>& strategy,
                       const Arg<double>& repeat) {
             return lamps::Segment::checked(output_tokens.get("output_tokens"),
                                            api_seconds.get("api_seconds"),
                                            return_tokens.get("return_tokens"),
                                            strategy.get("strategy"), repeat.get("repeat"));
           }),
           "output_tokens"_a, "api_seconds"_a = 0.0, "return_tokens"_a = 0.0,
           "strategy"_a = py::none(), "repeat"_a = 1.0)
      .def_readonly("output_tokens", &lamps::Segment::output_tokens)
      .def_readonly("api_seconds", &lamps::Segment::api_seconds)
      .def_readonly("return_tokens", &lamps::Segment::return_tokens)
      .def_readonly("strategy", &lamps::Segment::strategy)
      .def_readonly("repeat", &lamps::Segment::repeat)
      .def_property_readonly("has_api_call", &lamps::Segment::has_api_call);

  m.def(
      "preserve_waste",
      [](const Request& request, const Batch& batch, const Cost& cost) {
        return lamps::preserve_waste(request.get("request"), batch.get("batch"), cost.get("cost"));
      },
      "request"_a, "batch"_a, "cost"_a,
      "Token-seconds wasted keeping the KV cache in GPU memory during the call.");
  m.def(
      "discard_waste",
      [](const Request& request, const Batch& batch, const Cost& cost) {
        return lamps::discard_waste(request.get("request"), batch.get("batch"), cost.get("cost"));
      },
      "request"_a, "batch"_a, "cost"_a,
      "Token-seconds wasted recomputing the uncached context after the call.");
  m.def(
      "swap_waste",
      [](const Request& request, const Batch& batch, const Cost& cost) {
        return lamps::swap_waste(request.get("request"), batch.get("batch"), cost.get("cost"));
      },
      "request"_a, "batch"_a, "cost"_a,
      "Token-seconds wasted moving the KV cache out and back over the host link.");
  m.def(
      "choose_strategy",
      [](const Request& request, const Batch& batch, const Cost& cost,
         const Arg<bool>& allow_swap) {
        return lamps::choose_strategy(request.get("request"), batch.get("batch"),
                                      cost.get("cost"), allow_swap.get("allow_swap"));
      },
      "request"_a, "batch"_a, "cost"_a, "allow_swap"_a = true,
      "The LAMPS choice: the strategy of least waste.");
  m.def(
      "infercept_should_discard",
      [](const Request& request, const Batch& batch, const Cost& cost) {
        return lamps::infercept_should_discard(request.get("request"), batch.get("batch"),
                                               cost.get("cost"));
      },
      "request"_a, "batch"_a, "cost"_a,
      "InferCept's rule: discard when W_d < W_p for the remaining call time.");
  m.def(
      "infercept_swap_budget_tokens",
      [](const Batch& batch, const Cost& cost) {
        return lamps::infercept_swap_budget_tokens(batch.get("batch"), cost.get("cost"));
      },
      "batch"_a, "cost"_a, "Tokens one iteration's compute can hide a one-way swap of.");
  m.def(
      "score_request",
      [](const Arg<double>& context_tokens, const Arg<double>& pending_prefill_tokens,
         const Arg<std::vector<lamps::Segment>>& segments, const Batch& batch, const Cost& cost,
         const Arg<bool>& allow_swap) {
        const double context = context_tokens.get("context_tokens");
        const double pending = pending_prefill_tokens.get("pending_prefill_tokens");
        const std::vector<lamps::Segment> remaining = segments.get("segments");
        lamps::check_request_tokens(context, pending);
        return lamps::score_request(context, pending, remaining.data(), remaining.size(),
                                    batch.get("batch"), cost.get("cost"),
                                    allow_swap.get("allow_swap"));
      },
      "context_tokens"_a, "pending_prefill_tokens"_a, "segments"_a, "batch"_a, "cost"_a,
      "allow_swap"_a = true, "Memory-over-time score (token-seconds) of one request.");
  m.def("score_batch", &score_batch, "context_tokens"_a, "pending_prefill_tokens"_a,
        "segment_offsets"_a, "output_tokens"_a, "api_seconds"_a, "return_tokens"_a, "strategy"_a,
        "batch"_a, "cost"_a, "allow_swap"_a = true, "out"_a = py::none(), "repeat"_a = py::none(),
        "Scores of many requests from column arrays, read in place (zero-copy); `repeat`: "
        "float64 count per segment (None: each once).");

  using Handle = Arg<std::int64_t>;
  py::class_<lamps::RankingQueue>(m, "RankingQueue",
                                  "Indexed min-heap of handles by score, with starvation prevention.")
      .def(py::init([](const Arg<std::optional<std::int64_t>>& starvation_threshold,
                       const Arg<std::int64_t>& promoted_share) {
             return lamps::RankingQueue(
                 non_negative_count(starvation_threshold.get("starvation_threshold").value_or(0),
                                    "starvation_threshold"),
                 non_negative_count(promoted_share.get("promoted_share"), "promoted_share"));
           }),
           "starvation_threshold"_a = 100, "promoted_share"_a = 1)
      .def_property_readonly("starvation_threshold", &lamps::RankingQueue::starvation_threshold)
      .def_property_readonly("promoted_share", &lamps::RankingQueue::promoted_share)
      .def_property_readonly("iteration", &lamps::RankingQueue::iteration)
      .def_property_readonly_static("max_handle", [](py::object) { return lamps::RankingQueue::kMaxHandle; })
      .def_property_readonly_static(
          "never", [](py::object) { return std::numeric_limits<std::int64_t>::max(); },
          "A `starve_after` that never promotes.")
      .def(
          "push",
          [](lamps::RankingQueue& q, const Handle& handle, const Arg<double>& score,
             const Arg<double>& arrival, const Arg<std::optional<std::int64_t>>& waiting_since,
             const Arg<bool>& promoted, const Arg<std::optional<std::int64_t>>& starve_after) {
            std::optional<std::uint64_t> since;
            if (const auto w = waiting_since.get("waiting_since")) {
              since = non_negative_count(*w, "waiting_since");
            }
            std::optional<std::uint64_t> after;
            if (const auto a = starve_after.get("starve_after")) {
              after = *a == std::numeric_limits<std::int64_t>::max()
                          ? lamps::RankingQueue::kNever
                          : non_negative_count(*a, "starve_after");
            }
            q.push(handle.get("handle"), score.get("score"), arrival.get("arrival"), since,
                   promoted.get("promoted"), after);
          },
          "handle"_a, "score"_a, "arrival"_a, "waiting_since"_a = py::none(), "promoted"_a = false,
          "starve_after"_a = py::none(),
          "Queue a handle (unique while queued) with its score and arrival time; `starve_after`: "
          "ticks it may wait before promotion (None: the queue's threshold; `never`).")
      .def("pop", &lamps::RankingQueue::pop, "Remove and return the first handle.")
      .def("peek", &lamps::RankingQueue::peek, "Return the first handle without removing it.")
      .def(
          "erase", [](lamps::RankingQueue& q, const Handle& handle) { q.erase(handle.get("handle")); },
          "handle"_a, "Remove a queued handle.")
      .def(
          "update",
          [](lamps::RankingQueue& q, const Handle& handle, const Arg<double>& score) {
            q.update(handle.get("handle"), score.get("score"));
          },
          "handle"_a, "score"_a, "Re-key one handle.")
      .def(
          "update_many",
          [](lamps::RankingQueue& q, py::handle handles, py::handle scores) {
            const py::array h = array_column<std::int64_t>(handles, "handles");
            const double* s = column<double>(scores, "scores", h.shape(0));
            q.update_many(static_cast<const std::int64_t*>(h.data()), s,
                          static_cast<std::size_t>(h.shape(0)));
          },
          "handles"_a, "scores"_a, "Re-key many handles at once (int64 and float64 arrays).")
      .def(
          "tick",
          [](lamps::RankingQueue& q, const Arg<std::int64_t>& iterations) {
            return q.tick(non_negative_count(iterations.get("iterations"), "iterations"));
          },
          "iterations"_a = 1, "Advance the iteration clock; returns the number promoted.")
      .def(
          "is_promoted",
          [](const lamps::RankingQueue& q, const Handle& handle) {
            return q.is_promoted(handle.get("handle"));
          },
          "handle"_a, "Whether the handle was promoted for having waited too long.")
      .def(
          "score",
          [](const lamps::RankingQueue& q, const Handle& handle) {
            return q.score(handle.get("handle"));
          },
          "handle"_a, "The handle's current score.")
      .def(
          "waiting_since",
          [](const lamps::RankingQueue& q, const Handle& handle) {
            return q.waiting_since(handle.get("handle"));
          },
          "handle"_a, "The iteration the handle started waiting.")
      .def("ranked", &lamps::RankingQueue::ranked, "Handles in pop order, without mutating.")
      .def("clear", &lamps::RankingQueue::clear, "Remove every handle.")
      .def("__len__", &lamps::RankingQueue::size)
      .def("__bool__", [](const lamps::RankingQueue& q) { return !q.empty(); })
      .def(
          "__contains__",
          [](const lamps::RankingQueue& q, const Handle& handle) {
            return q.contains(handle.get("handle"));
          },
          "handle"_a);
}
