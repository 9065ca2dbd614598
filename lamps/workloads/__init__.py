"""Augmented-LLM workloads: the data model, trace formats, a synthetic mixture, arrivals.

``model`` holds the request templates, ``formats`` reads InferCept-format traces and the
shipped compact ones, ``synthetic`` derives per-type statistics and generates from them, and
``arrivals`` samples Poisson arrivals, ``variants`` derives the single-API trace,
``agent`` generates the modern agent trace, ``coding`` reads real coding-agent traces in
kv-cache-tester's format and ``coding_pack`` ships a subset of them. The public names are
re-exported here.
"""

from lamps.workloads.agent import agent_workload
from lamps.workloads.arrivals import poisson_arrivals
from lamps.workloads.coding import (
    DEFAULT_MAX_HUMAN_SECONDS,
    TracedConversation,
    TracedTurn,
    TraceFormatError,
    load_coding_traces,
    parse_coding_trace,
)
from lamps.workloads.formats import (
    BUILTIN_TRACES,
    CHARS_PER_TOKEN,
    CODING_TRACES,
    GENERATED_TRACES,
    classify,
    estimate_tokens,
    load_trace,
    parse_compact,
    parse_trace,
    to_compact,
    write_compact,
)
from lamps.workloads.model import KINDS, Arrival, TraceSegment, Workload, WorkloadRequest
from lamps.workloads.synthetic import (
    STATS_FILE,
    derive_stats,
    load_stats,
    synthetic_workload,
    write_stats,
)
from lamps.workloads.variants import single_api

__all__ = [
    "BUILTIN_TRACES",
    "CHARS_PER_TOKEN",
    "CODING_TRACES",
    "DEFAULT_MAX_HUMAN_SECONDS",
    "GENERATED_TRACES",
    "KINDS",
    "STATS_FILE",
    "Arrival",
    "TraceFormatError",
    "TraceSegment",
    "TracedConversation",
    "TracedTurn",
    "Workload",
    "WorkloadRequest",
    "agent_workload",
    "classify",
    "derive_stats",
    "estimate_tokens",
    "load_coding_traces",
    "load_stats",
    "load_trace",
    "parse_coding_trace",
    "parse_compact",
    "parse_trace",
    "poisson_arrivals",
    "single_api",
    "synthetic_workload",
    "to_compact",
    "write_compact",
    "write_stats",
]
