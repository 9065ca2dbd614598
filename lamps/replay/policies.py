"""The scheduling policies a replay compares, registered by name: the baselines, LAMPS, ablations.

The policy classes live in ``lamps.replay.policy_classes`` and the registry in
``lamps.replay.policy_registry``; this module registers the built-in policies (and those of
``lamps.replay.agent_policies``) and re-exports both, so ``lamps.replay.policies`` is the one
import a caller needs. To add one, subclass ``ReplayPolicy`` and call ``register`` with a
factory and the source it follows; ``lamps replay --help`` and the README list the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lamps.baselines.continuum_ttl import TtlRule
from lamps.replay.ablations import ABLATIONS, STATELESS_ABLATIONS, plain
from lamps.replay.modes import API_MODES, ApiMode
from lamps.replay.policy_classes import (
    ContinuumPolicy,
    InferCeptPolicy,
    LampsAuthorsPolicy,
    LampsPolicy,
    LampsStatelessPolicy,
    ReplayPolicy,
    VllmPolicy,
    VllmPreservePolicy,
)
from lamps.replay.policy_registry import (
    REGISTRY,
    PolicyContext,
    PolicySpec,
    describe_policies,
    make_policy,
    policy_names,
    register,
)

__all__ = [
    "ABLATIONS",
    "API_MODES",
    "POLICY_NAMES",
    "REGISTRY",
    "STATELESS_ABLATIONS",
    "ApiMode",
    "ContinuumPolicy",
    "InferCeptPolicy",
    "LampsAuthorsPolicy",
    "LampsPolicy",
    "LampsStatelessPolicy",
    "PolicyContext",
    "PolicySpec",
    "ReplayPolicy",
    "VllmPolicy",
    "VllmPreservePolicy",
    "describe_policies",
    "make_policy",
    "policy_names",
    "register",
]

register(
    "vllm",
    lambda c: VllmPolicy(),
    "vLLM 0.32 as shipped: each API call ends the request; the continuation is a new request "
    "at the back of FCFS (stateless API mode)",
)
register(
    "vllm-preserve",
    lambda c: VllmPreservePolicy(),
    "vLLM 0.32 streaming-input sessions: every paused session keeps its KV on the GPU, FCFS",
)
register(
    "infercept",
    lambda c: InferCeptPolicy(c.cost_config),
    "this project's InferCept (lamps/baselines/infercept.py): per-step discard when W_d < W_p "
    "on the remaining call time, budgeted swap, FCFS by original arrival, exact API times",
)
register(
    "infercept-paper",
    lambda c: InferCeptPolicy(c.cost_config, paper=True),
    "InferCept as its paper describes it (lamps/baselines/infercept_paper.py): the swap budget "
    "spent on the most wasteful pauses first, then min(W_p, W_d) for the rest",
)
register(
    "lamps-authors",
    lambda c: LampsAuthorsPolicy(noise=c.noise, seed=c.seed, cost_config=c.cost_config),
    "LAMPS as its authors' code (mars-repository/mars-codebase) does it "
    "(lamps/baselines/lamps_authors.py): preserve or discard, waiting+swapped ranked, "
    "running FCFS, with --noise as its benchmark adds it",
    noisy=True,
)
register(
    "continuum",
    lambda c: ContinuumPolicy("continuum", TtlRule.PAPER, c.cost_config),
    "Continuum (arXiv 2511.02230; lamps/baselines/continuum.py) over the stateless API: TTL "
    "pins on tool calls chosen as its paper describes, program-level FCFS",
)
register(
    "continuum-code",
    lambda c: ContinuumPolicy("continuum-code", TtlRule.CODE, c.cost_config),
    "Continuum with the TTL rule of its code (Hanchenli/vllm-continuum)",
)
register(
    "lamps",
    lambda c: LampsPolicy("lamps", c.cost_config, noise=c.noise, seed=c.seed),
    "LAMPS (arXiv 2410.18248) as this package implements it, trace predictions plus --noise",
    noisy=True,
)
register(
    "lamps-oracle",
    lambda c: LampsPolicy("lamps-oracle", c.cost_config, seed=c.seed, oracle=True),
    "LAMPS with exact predictions (each turn, its call, and how many calls follow)",
)
register(
    "lamps-no-rank",
    lambda c: LampsPolicy(
        "lamps-no-rank", c.cost_config, noise=c.noise, ranking=False, seed=c.seed
    ),
    "LAMPS's strategy choice only, FCFS order (the paper's ablation), with --noise",
    noisy=True,
)


def _ablation(
    policy_cls: type[LampsPolicy] | type[LampsStatelessPolicy], name: str, switches: Any
) -> Callable[[PolicyContext], ReplayPolicy]:
    """The factory of a LAMPS ablation (its class, name and switches bound now)."""
    return lambda c: policy_cls(name, c.cost_config, noise=c.noise, seed=c.seed, switches=switches)


def _register_ablations(
    table: Mapping[str, tuple[Mapping[str, Any], str]],
    policy_cls: type[LampsPolicy] | type[LampsStatelessPolicy],
    what: str,
) -> None:
    """Registers each ablation of `table` (name -> (switches, what it tests))."""
    for name, (switches, tests) in table.items():
        register(
            name,
            _ablation(policy_cls, name, switches),
            f"ablation, {what} with {plain(switches)}: {tests}",
            noisy=True,
        )


_register_ablations(ABLATIONS, LampsPolicy, "LAMPS")

register(
    "lamps-stateless",
    lambda c: LampsStatelessPolicy("lamps-stateless", c.cost_config, noise=c.noise, seed=c.seed),
    "LAMPS over the OpenAI API (stateless API mode): the gap between a session's requests is "
    "an API pause, its turn pinned, left to the prefix cache or swapped (lamps.vllm.sessions)",
    noisy=True,
)

_register_ablations(STATELESS_ABLATIONS, LampsStatelessPolicy, "LAMPS over the OpenAI API")

from lamps.replay import agent_policies  # noqa: E402, F401  (registers vllm-offload, thunderagent)

POLICY_NAMES = policy_names()
"""The policies registered here (others may register more: use ``policy_names()``)."""
