"""What a KV connector declares it offers the pauses, as the schedulers resolve it at startup."""

from __future__ import annotations

from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler

from lamps.connector import LampsSwapConnector
from lamps.harness import swap_connector_config
from lamps.mechanism.capabilities import (
    KeepsSessionTurns,
    SwapsPausedKv,
    capability_summary,
    pause_swapper,
    session_turn_keeper,
    writes_through_to_host,
)
from lamps.mechanism.pausing import KvPauses


def test_the_swap_connector_declares_both_capabilities() -> None:
    assert issubclass(LampsSwapConnector, SwapsPausedKv)
    assert issubclass(LampsSwapConnector, KeepsSessionTurns)
    assert not LampsSwapConnector.__abstractmethods__


def test_an_undeclared_connector_is_not_used_even_with_the_methods() -> None:
    class LooksLikeOne:  # duck typing is no longer enough: the capability must be declared
        def lamps_swap_out(self, request: Any) -> bool:
            return True

        def lamps_park_turn(self, key: str, blocks: list[Any], hashes: list[Any]) -> bool:
            return True

    thing = LooksLikeOne()
    assert pause_swapper(thing) is None and session_turn_keeper(thing) is None
    assert not writes_through_to_host(thing) and not writes_through_to_host(None)
    assert capability_summary(thing) == "LooksLikeOne: nothing the pauses use"
    assert capability_summary(None) == "no KV connector: swaps fall back to discard"


def test_a_scheduler_resolves_the_connector_once(make_vllm_scheduler: Any) -> None:
    with_swap = make_vllm_scheduler(
        Scheduler, kv_transfer_config=swap_connector_config(host_pool_gib=0.01)
    )
    pauses = KvPauses(with_swap)
    assert pauses.can_swap and pauses.swapper is with_swap.connector
    assert capability_summary(with_swap.connector) == (
        "LampsSwapConnector: SwapsPausedKv, KeepsSessionTurns"
    )
    without = KvPauses(make_vllm_scheduler(Scheduler))
    assert not without.can_swap and without.swapper is None


def test_a_config_naming_the_earlier_path_still_loads_the_connector(
    make_vllm_scheduler: Any,
) -> None:
    from vllm.config import KVTransferConfig

    earlier = KVTransferConfig(
        kv_connector="LampsSwapConnector",
        kv_role="kv_both",
        kv_connector_module_path="lamps.vllm.swap",
        kv_connector_extra_config={"host_pool_gib": 0.01},
    )
    sched = make_vllm_scheduler(Scheduler, kv_transfer_config=earlier)
    assert type(sched.connector) is LampsSwapConnector
