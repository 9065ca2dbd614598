"""Order-agnostic versions of the vLLM 0.33 and 0.34 scheduler tests LAMPS fails on purpose.

As python_tests/test_conformance_scenarios.py does for the tests 0.32 already had: the steps of
a vLLM test whose entry in python_tests/conformance/expected_failures.py names one of these, on
the LAMPS classes, checking only what must hold whatever the order and the pause strategy.
They run on every tested vLLM version (the steps use nothing version-specific).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from test_conformance_scenarios import BOTH_CLASSES, DISCARD_HINTS, PRESERVE_HINTS, Ledger
from vllm.config import SpeculativeConfig
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput
from vllm.v1.request import RequestStatus

from lamps.harness import build_scheduler, build_vllm_config, make_request, model_runner_output
from lamps.mechanism.compat import VLLM_VERSION, runner_output_ids
from lamps.vllm import LampsSyncScheduler

QUIET = {"log_interval_s": 0.0}


def with_drafts(model_dir: Path, cls: type, num_drafts: int) -> Any:
    """A LAMPS scheduler with n-gram speculative decoding (the GPU n-gram drafter when async)."""
    is_async = issubclass(cls, AsyncScheduler)
    config = build_vllm_config(
        model_dir, async_scheduling=is_async, additional_config={"lamps": QUIET}
    )
    drafts = SpeculativeConfig(
        method="ngram_gpu" if is_async else "ngram",
        num_speculative_tokens=num_drafts,
        prompt_lookup_max=num_drafts,
        prompt_lookup_min=1,
    )
    return build_scheduler(
        dataclasses.replace(config, speculative_config=drafts), scheduler_cls=cls
    )


@BOTH_CLASSES
@pytest.mark.parametrize("hints", [PRESERVE_HINTS, DISCARD_HINTS], ids=["preserve", "discard"])
def test_next_chunk_after_a_stop_on_accepted_drafts_is_computed_in_full(
    tiny_llama_dir: Path, cls: type, hints: dict[str, Any]
) -> None:
    """A stop on an accepted draft trims the step's later drafts; the next chunk's context is
    the kept tokens plus the chunk, and what it computes starts at or before the kept end."""
    if VLLM_VERSION[:2] < (0, 33):
        pytest.skip(
            "vLLM 0.32's own scheduler keeps the trimmed turn's last token (its computed count, "
            "6, passes the 5 tokens kept) and computes the chunk on the drafts' positions; 0.33 "
            "fixed it and added the vLLM test this scenario follows"
        )
    sched = with_drafts(tiny_llama_dir, cls, 2)
    extra = {"lamps": hints}
    sched.add_request(make_request("s", [1, 2, 3], max_tokens=2, resumable=True, extra_args=extra))
    out = sched.schedule()
    sched.update_from_output(out, model_runner_output(out, {"s": 10}))
    sched.update_draft_token_ids(DraftTokenIds(["s"], [[11, 12]]))
    out = sched.schedule()
    assert out.scheduled_spec_decode_tokens == {"s": [11, 12]}
    # Both drafts accepted and a bonus token: max_tokens (2) stops the turn at 11.
    sampled = ModelRunnerOutput(**runner_output_ids(["s"]), sampled_token_ids=[[11, 12, 13]])
    sched.update_from_output(out, sampled)
    session = sched.requests["s"]
    assert session.status == RequestStatus.WAITING_FOR_STREAMING_REQ
    assert list(session.all_token_ids) == [1, 2, 3, 10, 11]
    sched.add_request(make_request("s", [7, 8], max_tokens=2, resumable=True, extra_args=extra))
    out = sched.schedule()
    (resumed,) = out.scheduled_new_reqs
    assert list(session.prompt_token_ids) == [1, 2, 3, 10, 7, 8]
    # Kept context [1, 2, 3, 10]: a preserved one is reused, a discarded one recomputed; never
    # a position of the trimmed drafts.
    assert resumed.num_computed_tokens <= 4
    assert resumed.num_computed_tokens + out.num_scheduled_tokens["s"] == 6
    sched.finish_requests("s", RequestStatus.FINISHED_ABORTED)
    assert not sched.requests


@pytest.mark.parametrize("window", [0, 4])
def test_cache_aware_admission_asked_for_keeps_every_request_and_its_hit(
    tiny_llama_dir: Path, window: int
) -> None:
    """`warm` repeats a finished prompt, `cold` does not: whichever LAMPS admits first, both
    run to the end and `warm` is admitted on its cached prefix, with or without the window."""
    if window and VLLM_VERSION[:2] < (0, 34):
        pytest.skip("cache-aware admission (--cache-aware-admission-window) is new in vLLM 0.34")
    config = build_vllm_config(
        tiny_llama_dir, enable_prefix_caching=True, additional_config={"lamps": QUIET}
    )
    if window:
        config.scheduler_config.cache_aware_admission_window = window
        config.scheduler_config.cache_aware_admission_threshold = 0.0
    sched = build_scheduler(config, scheduler_cls=LampsSyncScheduler)
    if window:
        assert sched.cache_aware_window == 0
    ledger = Ledger(sched)
    ledger.add(make_request("seed", list(range(48)), max_tokens=2))
    ledger.drain()
    ledger.add(make_request("cold", list(range(500, 548)), max_tokens=3))
    ledger.add(make_request("warm", list(range(48)), max_tokens=3))
    hits: dict[str, int] = {}
    for _ in range(40):
        if not sched.has_unfinished_requests():
            break
        out = ledger.step()
        hits.update({r.req_id: r.num_computed_tokens for r in out.scheduled_new_reqs})
    assert hits == {"cold": 0, "warm": 32}  # two full blocks cached; the last is recomputed
    ledger.check_finished()
