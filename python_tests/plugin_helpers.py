"""Helpers of the plug-in's tests: a LAMPS scheduler built in-process, a paused session."""

from __future__ import annotations

from typing import Any

from vllm.v1.request import RequestStatus

from lamps.harness import SettableClock, make_request, run_step
from lamps.vllm import LampsScheduler, LampsSyncScheduler

LAMPS_CLASSES = [LampsSyncScheduler, LampsScheduler]
QUIET = {"log_interval_s": 0.0}


def lamps(make: Any, cls: type = LampsSyncScheduler, **lamps_cfg: Any) -> Any:
    """A LAMPS scheduler on a settable clock (``sched.test_clock``) that stands still unless a
    test moves it: decisions that read step times do not depend on the machine's load."""
    kwargs = {k: lamps_cfg.pop(k) for k in list(lamps_cfg) if k in _BUILD_KEYS}
    sched = make(cls, additional_config={"lamps": {**QUIET, **lamps_cfg}}, **kwargs)
    sched.test_clock = SettableClock(100.0)
    sched.set_clock(sched.test_clock)
    return sched


_BUILD_KEYS = {"max_num_seqs", "num_blocks", "enable_prefix_caching", "max_num_batched_tokens"}


def start_session(
    sched: Any,
    api_seconds: float | None,
    prompt_len: int = 100,
    max_tokens: int = 4,
    rid: str = "s",
) -> Any:
    hints = {"tool": "calc"}
    if api_seconds is not None:
        hints["predicted_api_seconds"] = api_seconds
    sched.add_request(
        make_request(
            rid,
            list(range(prompt_len)),
            max_tokens=max_tokens,
            resumable=True,
            extra_args={"lamps": hints},
        )
    )
    for _ in range(max_tokens + 2):
        run_step(sched)
    req = sched.requests[rid]
    assert req.status == RequestStatus.WAITING_FOR_STREAMING_REQ
    return req


def resume(
    sched: Any, rid: str = "s", chunk: tuple[int, ...] = (5, 6, 7), max_tokens: int = 2
) -> None:
    sched.add_request(make_request(rid, list(chunk), max_tokens=max_tokens, resumable=True))


def free_blocks(sched: Any) -> int:
    return sched.kv_cache_manager.block_pool.get_num_free_blocks()
