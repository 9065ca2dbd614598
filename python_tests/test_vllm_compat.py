"""The compatibility layer: the vLLM version check and the contract with vLLM's private members."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1
from vllm.v1.request import RequestStatus

from lamps.harness import make_request, swap_connector_config
from lamps.mechanism import compat
from lamps.mechanism.compat import PRIVATE_MEMBERS
from lamps.mechanism.versions import check_version, parse_version


def test_version_range_is_checked_with_a_readable_error() -> None:
    assert parse_version("0.32.0+cpu") == (0, 32, 0)
    assert parse_version("0.33.1rc1") == (0, 33, 1)
    assert check_version("0.33.0") == (0, 33, 0)
    with pytest.raises(ImportError, match=r"supports vLLM 0\.32, 0\.33.*found vLLM 0\.31\.0"):
        check_version("0.31.0")
    with pytest.raises(ImportError, match=r"found vLLM 1\.0\.0"):
        check_version("1.0.0")
    with pytest.raises(ImportError, match="cannot read"):
        check_version("dev")


@pytest.mark.parametrize("member", PRIVATE_MEMBERS, ids=lambda m: f"{m.owner.__name__}.{m.name}")
def test_private_member_exists_with_the_expected_signature(
    member: compat.PrivateMember, make_vllm_scheduler: Any
) -> None:
    from vllm.v1.core.sched.scheduler import Scheduler

    if member.parameters is not None:
        method = getattr(member.owner, member.name)
        names = tuple(inspect.signature(method).parameters)[1:]
        assert names == member.parameters, f"{member.name}{inspect.signature(method)}"
        return
    if member.owner is Scheduler:
        instance: Any = make_vllm_scheduler(Scheduler)
    elif member.owner is KVConnectorBase_V1:
        config = swap_connector_config(host_pool_gib=0.01)
        instance = make_vllm_scheduler(Scheduler, kv_transfer_config=config).connector
        assert isinstance(instance, KVConnectorBase_V1)
    else:
        instance = make_request("r", [1, 2, 3])
    assert hasattr(instance, member.name), member.name


def test_every_private_vllm_name_used_in_lamps_is_declared() -> None:
    # Private (underscore) members of vLLM's scheduler and of its KV connector base called,
    # read or overridden anywhere in lamps/ must be declared in compat.PRIVATE_MEMBERS, and
    # used nowhere else.
    import pathlib
    import re

    root = pathlib.Path(compat.__file__).resolve().parents[1]
    declared = {m.name for m in PRIVATE_MEMBERS if m.name.startswith("_")}
    from vllm.v1.core.sched.scheduler import Scheduler

    vllm_private = {n for n in dir(Scheduler) if n.startswith("_") and not n.startswith("__")}
    # The connector base's private methods and the attributes its constructor sets.
    vllm_private |= {
        n for n in dir(KVConnectorBase_V1) if n.startswith("_") and not n.startswith("__")
    }
    vllm_private |= set(
        re.findall(r"self\.(_[a-z][a-z_]+)\b", inspect.getsource(KVConnectorBase_V1))
    )
    for path in root.rglob("*.py"):
        text = path.read_text()
        used = {n for n in re.findall(r"\b(_[a-z][a-z_]+)\b", text) if n in vllm_private}
        if path.name == "compat.py":
            assert used <= declared, sorted(used - declared)
        else:
            assert not used, f"{path.relative_to(root)} uses vLLM private members {sorted(used)}"


def test_session_stopped_while_preempted_stays_queued(make_vllm_scheduler: Any) -> None:
    # Async scheduling: "s" is preempted (the cache is full when "big" needs a block) while
    # the last token of its turn is in flight; that token then pauses it. vLLM 0.32 queued it
    # and removed it from the waiting queue right after (it stopped while preempted), so its
    # next input never ran.
    from pipelined import PipelinedDriver

    from lamps.vllm import LampsScheduler

    sched = make_vllm_scheduler(
        LampsScheduler, async_scheduling=True, num_blocks=7, max_num_seqs=4,
        additional_config={"lamps": {"log_interval_s": 0.0, "ranking": False}},
    )  # fmt: skip
    driver = PipelinedDriver(sched, queue_size=2)
    sched.add_request(make_request("big", list(range(100, 144)), max_tokens=200))
    driver.step()
    driver.step()
    sched.add_request(make_request("s", list(range(40)), max_tokens=3, resumable=True))
    for _ in range(4):
        driver.step()
    session = sched.requests["s"]
    assert session.num_preemptions == 1
    assert session.status == RequestStatus.WAITING_FOR_STREAMING_REQ
    assert session.num_output_tokens == 3
    queued = [r.request_id for r in (*sched.waiting, *sched.kv_holding_waiting)]
    assert queued.count("s") == 1
    sched.finish_requests("big", RequestStatus.FINISHED_ABORTED)
    sched.add_request(make_request("s", [7, 8], max_tokens=2, resumable=True))
    outputs = []
    for _ in range(12):
        outputs += [o for o in driver.step() if o.request_id == "s"]
    assert sum(len(o.new_token_ids) for o in outputs) == 2
    assert outputs[-1].finish_reason is not None
