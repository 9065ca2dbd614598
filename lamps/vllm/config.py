"""LAMPS scheduler configuration: vLLM's additional_config, then LAMPS_* env vars, then defaults."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from lamps.defaults import DEFAULT_PROFILE
from lamps.vllm.switches import (
    SWITCHES,
    Redecide,
    RunningOrder,
    ScoreHorizon,
    StarvationRule,
    SwapPolicy,
)

ENV_PREFIX = "LAMPS_"
ENV_CONFIG_FILE = "LAMPS_CONFIG"
ADDITIONAL_CONFIG_KEY = "lamps"

# What the C++ core stores: iteration counts as int64, token counts up to lamps.MAX_TOKENS.
_INT64_MAX = 2**63 - 1
_MAX_TOKENS = 2**53

_COST_MODEL_KEYS = (
    "a_ms_per_token",
    "c_ms",
    "kv_bytes_per_token",
    "link_bytes_per_second",
    "prefill_ms_per_token_pair",
    "kv_read_ms_per_token",
)
_REQUIRED_COST_MODEL_KEYS = _COST_MODEL_KEYS[:4]


@dataclass(frozen=True)
class LampsConfig:
    """Validated settings of the LAMPS scheduler plug-in."""

    profile: str = DEFAULT_PROFILE
    cost_model: Mapping[str, float] | None = None
    starvation_threshold: int = 100
    starvation_share: int = 4
    ranking: bool = True
    rescore_interval: int = 1
    rescore_tolerance: float = 0.25
    log_interval_s: float = 10.0
    default_api_seconds: float = 1.0
    default_output_tokens: int = 64
    allow_swap: bool = True
    # How each of LAMPS' design choices is made (the ablations; README "Ablations").
    # Given as members or their values (strings); stored as members (lamps.vllm.switches).
    running_order: RunningOrder = RunningOrder.SCORE
    starvation_rule: StarvationRule = StarvationRule.SECONDS
    starvation_seconds: float = 10.0
    starvation_factor: float = 4.0
    redecide: Redecide = Redecide.OVERRUN
    swap_policy: SwapPolicy = SwapPolicy.UNBUDGETED
    score_horizon: ScoreHorizon = ScoreHorizon.LIFE
    # Off: discarding paused KV under pressure recomputes it at resume; past the knee that cost
    # 1.38x mean e2e against letting vLLM preempt (docs/results.md, "The mechanisms").
    release_paused_under_pressure: bool = False
    max_preemptions: int = 2
    sessions: bool = True
    session_prefix_aware: bool = True
    session_idle_timeout_s: float = 300.0
    session_max_pin_s: float = 60.0
    session_max_parked_fraction: float = 0.5
    max_sessions: int = 65536

    def __post_init__(self) -> None:
        if not isinstance(self.profile, str) or not self.profile:
            raise ValueError(
                f"lamps config 'profile' must be a non-empty string, got {self.profile!r}"
            )
        if self.cost_model is not None:
            object.__setattr__(self, "cost_model", _validate_cost_model(self.cost_model))
            try:  # the core's own bounds: coefficients that can still give finite scores
                self.make_cost_model()
            except ValueError as e:
                raise ValueError(f"lamps config 'cost_model': {e}") from e
        _check_int(self.starvation_threshold, "starvation_threshold", minimum=0)
        _check_int(self.starvation_share, "starvation_share", minimum=1)
        _check_bool(self.release_paused_under_pressure, "release_paused_under_pressure")
        _check_int(self.max_preemptions, "max_preemptions", minimum=0)
        _check_bool(self.ranking, "ranking")
        _check_int(self.rescore_interval, "rescore_interval", minimum=1)
        _check_float(self.rescore_tolerance, "rescore_tolerance")
        _check_float(self.log_interval_s, "log_interval_s")
        _check_float(self.default_api_seconds, "default_api_seconds")
        _check_int(
            self.default_output_tokens, "default_output_tokens", minimum=1, maximum=_MAX_TOKENS
        )
        _check_bool(self.allow_swap, "allow_swap")
        for key, choice in SWITCHES.items():
            object.__setattr__(self, key, choice.parse(getattr(self, key), f"lamps config '{key}'"))
        _check_float(self.starvation_seconds, "starvation_seconds")
        _check_float(self.starvation_factor, "starvation_factor")
        _check_bool(self.sessions, "sessions")
        _check_bool(self.session_prefix_aware, "session_prefix_aware")
        _check_float(self.session_idle_timeout_s, "session_idle_timeout_s")
        _check_float(self.session_max_pin_s, "session_max_pin_s")
        _check_float(self.session_max_parked_fraction, "session_max_parked_fraction")
        if self.session_max_parked_fraction > 1:
            raise ValueError(
                "lamps config 'session_max_parked_fraction' must be in [0, 1], "
                f"got {self.session_max_parked_fraction!r}"
            )
        _check_int(self.max_sessions, "max_sessions", minimum=1)

    def make_cost_model(self, kv_bytes_per_token: float | None = None) -> Any:
        """The lamps.CostModel these settings name.

        A named profile gives the measured iteration-time fit and link bandwidth; the KV bytes
        per token are the served model's when given (`served_kv_bytes_per_token`), since they
        do not cancel in swap costs. An explicit `cost_model` is used as written.
        """
        from lamps import CostModel

        if self.cost_model is not None:
            cm = dict(self.cost_model)
            return CostModel(**cm, name="custom")
        try:
            fit = CostModel.profile(self.profile)
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"lamps config 'profile': unknown cost-model profile {self.profile!r}; "
                f"known: {CostModel.profiles()}"
            ) from e
        if kv_bytes_per_token is None:
            return fit
        return CostModel(
            a_ms_per_token=fit.a_ms_per_token,
            c_ms=fit.c_ms,
            kv_bytes_per_token=kv_bytes_per_token,
            link_bytes_per_second=fit.link_bytes_per_second,
            prefill_ms_per_token_pair=fit.prefill_ms_per_token_pair,
            kv_read_ms_per_token=fit.kv_read_ms_per_token,
            name=fit.name,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LampsConfig:
        """Build from a dict, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"lamps config: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def load(
        cls,
        additional_config: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> LampsConfig:
        """Merge: defaults < LAMPS_CONFIG file < LAMPS_<KEY> env < additional_config["lamps"]."""
        env = os.environ if environ is None else environ
        merged: dict[str, Any] = {}
        path = env.get(ENV_CONFIG_FILE)
        if path:
            try:
                with open(path, encoding="utf-8") as config_file:
                    from_file = json.load(config_file)
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(
                    f"{ENV_CONFIG_FILE}={path!r}: cannot read a JSON object: {e}"
                ) from e
            if not isinstance(from_file, dict):
                raise ValueError(f"{ENV_CONFIG_FILE}={path!r}: expected a JSON object")
            merged.update(from_file)
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                merged[f.name] = _parse_env(f.name, raw)
        if additional_config:
            section = additional_config.get(ADDITIONAL_CONFIG_KEY)
            if section is not None:
                if not isinstance(section, Mapping):
                    raise ValueError(
                        f"additional_config['{ADDITIONAL_CONFIG_KEY}'] must be an object, "
                        f"got {type(section).__name__}"
                    )
                merged.update(section)
        return cls.from_mapping(merged)

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict view (for logs): the switches as their values."""
        d = dataclasses.asdict(self)
        d.update((key, str(getattr(self, key))) for key in SWITCHES)
        if self.cost_model is not None:
            d["cost_model"] = dict(self.cost_model)
        return d


def served_kv_bytes_per_token(kv_cache_config: Any) -> float | None:
    """KV bytes one token takes on one worker of the served model (None: no KV cache)."""
    total = 0.0
    for group in kv_cache_config.kv_cache_groups:
        spec = group.kv_cache_spec
        total += spec.page_size_bytes * len(group.layer_names) / spec.block_size
    return total or None


def _parse_env(key: str, raw: str) -> Any:
    if key == "profile" or key in SWITCHES:
        return raw
    if key in (
        "ranking", "allow_swap", "sessions", "session_prefix_aware",
        "release_paused_under_pressure",
    ):  # fmt: skip
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{ENV_PREFIX}{key.upper()}: expected a boolean, got {raw!r}")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ENV_PREFIX}{key.upper()}: cannot parse {raw!r}") from e


def _check_bool(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"lamps config '{key}' must be a boolean, got {value!r}")


def _check_int(value: Any, key: str, minimum: int, maximum: int = _INT64_MAX) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(
            f"lamps config '{key}' must be an integer in [{minimum}, {maximum}], got {value!r}"
        )


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the largest float
        return False


def _check_float(value: Any, key: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not _is_finite(value)
        or value < 0
    ):
        raise ValueError(f"lamps config '{key}' must be a finite number >= 0, got {value!r}")


def _validate_cost_model(values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ValueError(f"lamps config 'cost_model' must be an object, got {values!r}")
    if "saturation_tokens" in values:
        raise ValueError(
            "lamps config 'cost_model.saturation_tokens' is no longer used: the per-step token "
            "budget is the scheduler's own (max_num_batched_tokens); remove the key"
        )
    unknown = sorted(set(values) - set(_COST_MODEL_KEYS))
    if unknown:
        raise ValueError(f"lamps config 'cost_model': unknown key(s) {unknown}")
    missing = [k for k in _REQUIRED_COST_MODEL_KEYS if k not in values]
    if missing:
        raise ValueError(f"lamps config 'cost_model': missing key(s) {missing}")
    out: dict[str, float] = {}
    for k, v in values.items():
        _check_float(v, f"cost_model.{k}")
        if k in _REQUIRED_COST_MODEL_KEYS and k != "c_ms" and v <= 0:
            raise ValueError(f"lamps config 'cost_model.{k}' must be > 0, got {v!r}")
        out[k] = v
    return out
