"""LAMPS' counters and gauges on vLLM's Prometheus `/metrics`.

The scheduler runs in vLLM's engine-core process; `/metrics` is served by the front end. Each
step the scheduler's `make_stats()` puts `stats_payload(lamps_stats)` into the `SchedulerStats`
that vLLM sends to the front end (`lamps.mechanism.stats_channel.attach_stats_payload`), and
`LampsStatLogger`, registered under vLLM's `vllm.stat_logger_plugins` entry point group
(`pyproject.toml`), takes it out before vLLM's own loggers see the stats and publishes one
Prometheus series per `LampsStats` field, generated from the field's metadata: counters as
`lamps_<label>_total`, gauges as `lamps_<label>`, fields that split one quantity by strategy as
one series with a `strategy` label; every series is labelled by `model_name` and `engine` as
vLLM's own are. Series are created when the first payload arrives, so a vLLM server that does
not run a LAMPS scheduler shows none. (vLLM loads every installed stat logger plugin; set
`VLLM_PLUGINS` to leave this one out.)
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from vllm.v1.metrics.loggers import AggregateStatLoggerBase

from lamps.mechanism.stats_channel import take_stats_payload
from lamps.vllm.counters import COUNTER, LampsStats

_BASE_LABELS = ["model_name", "engine"]


_FLOAT_FIELDS = frozenset(f.name for f in fields(LampsStats) if f.type in ("float", float))


_INT64_MAX = (1 << 63) - 1


def stats_payload(stats: LampsStats) -> dict[str, int]:
    """The stats as integers (a float field in millionths: seconds go as microseconds).

    Each is clamped to an int64: msgpack, which carries the stats out of the engine-core
    process, cannot encode a larger integer, and the engine would fail to send its outputs.
    """
    payload = {}
    for f in fields(stats):
        value = getattr(stats, f.name)
        if f.name in _FLOAT_FIELDS:
            value = round(value * 1e6)
        payload[f.name] = max(-_INT64_MAX, min(int(value), _INT64_MAX))
    return payload


def _unscale(name: str, value: int) -> float:
    return value / 1e6 if name in _FLOAT_FIELDS else value


class _Series:
    """The Prometheus metrics generated from `LampsStats`' metadata."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}  # series name -> Counter or Gauge
        self.field_series: dict[str, tuple[str, str | None, bool]] = {}
        for f in fields(LampsStats):
            meta = f.metadata
            series, strategy = meta["series"], meta["strategy"]
            is_counter = meta["kind"] == COUNTER
            self.field_series[f.name] = (series, strategy, is_counter)
            if series in self.metrics:
                continue
            labels = _BASE_LABELS + (["strategy"] if strategy else [])
            help_text = meta["help"] if strategy is None else _strategy_help(series)
            metric_cls = Counter if is_counter else Gauge
            _unregister(series)
            self.metrics[series] = metric_cls(series, help_text, labels)

    def child(self, name: str, base: list[str]) -> tuple[Any, bool]:
        series, strategy, is_counter = self.field_series[name]
        values = base + ([strategy] if strategy else [])
        return self.metrics[series].labels(*values), is_counter


def _strategy_help(series: str) -> str:
    parts = [f"{f.metadata['strategy']}: {f.metadata['help']}"
             for f in fields(LampsStats) if f.metadata["series"] == series]  # fmt: skip
    return "By strategy. " + "; ".join(parts)


def _unregister(series: str) -> None:
    # A second logger in one process (tests, a restarted engine) replaces the first's series.
    collectors = getattr(REGISTRY, "_names_to_collectors", {})
    for name in (series, f"{series}_total", f"{series}_created"):
        collector = collectors.get(name)
        if collector is not None:
            REGISTRY.unregister(collector)


class LampsStatLogger(AggregateStatLoggerBase):
    """Publishes the LAMPS scheduler's counters and gauges next to vLLM's own on `/metrics`."""

    def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None) -> None:
        self.engine_indexes = engine_indexes or [0]
        model_name = vllm_config.model_config.served_model_name
        self._labels = {idx: [str(model_name), str(idx)] for idx in self.engine_indexes}
        self._series: _Series | None = None
        self._last: dict[int, dict[str, int]] = {}

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        """Take LAMPS' payload out of the scheduler stats and publish it."""
        if scheduler_stats is None:
            return
        payload = take_stats_payload(scheduler_stats)
        if payload is None:
            return
        if self._series is None:
            self._series = _Series()
        base = self._labels.get(engine_idx, ["", str(engine_idx)])
        last = self._last.setdefault(engine_idx, {})
        for name, value in payload.items():
            if name not in self._series.field_series:
                continue  # a field this front end does not know (another LAMPS version)
            metric, is_counter = self._series.child(name, base)
            if is_counter:
                delta = value - last.get(name, 0)
                if delta > 0:
                    metric.inc(_unscale(name, delta))
                last[name] = value  # a smaller value: the engine restarted, count from it
            else:
                metric.set(_unscale(name, value))

    def log_engine_initialized(self) -> None:
        """Nothing to log."""
