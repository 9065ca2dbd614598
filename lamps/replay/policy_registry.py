"""The replay policy registry: name -> factory and the source the policy follows.

To add a policy, subclass ``ReplayPolicy`` (``lamps.replay.policy_classes``) and call
``register`` with a factory and the source it follows; ``lamps replay --help`` and the README
list the registry. ``lamps.replay.policies`` registers the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lamps.defaults import DEFAULT_PROFILE

if TYPE_CHECKING:
    from lamps.replay.policy_classes import ReplayPolicy


@dataclass(frozen=True)
class PolicyContext:
    """What a policy factory is given: the scheduler cost model's config, noise, seed."""

    cost_config: dict[str, Any]
    noise: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class PolicySpec:
    """A registered policy: how to build it and what it follows."""

    name: str
    factory: Callable[[PolicyContext], ReplayPolicy]
    source: str
    noisy: bool = False


REGISTRY: dict[str, PolicySpec] = {}


def register(
    name: str, factory: Callable[[PolicyContext], ReplayPolicy], source: str, *, noisy: bool = False
) -> None:
    """Adds a policy to the registry (``noisy``: it takes ``--noise`` on its predictions)."""
    if name in REGISTRY:
        raise ValueError(f"policy {name!r} is already registered")
    REGISTRY[name] = PolicySpec(name, factory, source, noisy)


def policy_names() -> tuple[str, ...]:
    """Every registered policy, in registration order."""
    return tuple(REGISTRY)


def make_policy(
    name: str,
    *,
    noise: float = 0.0,
    seed: int = 0,
    cost_config: dict[str, Any] | None = None,
    cost_model: str | None = None,
) -> ReplayPolicy:
    """The policy called ``name``; ``cost_config``: ``{"profile": NAME}`` or ``{"cost_model":
    {...}}`` for the schedulers' own cost model (``cost_model=NAME`` is short for a profile;
    default: GPT-J-6B on an A100)."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(policy_names())}")
    if cost_config is None:
        cost_config = {"profile": cost_model or DEFAULT_PROFILE}
    return spec.factory(PolicyContext(cost_config, noise, seed))


def describe_policies() -> str:
    """One line per registered policy with its source (for --help and the README)."""
    return "\n".join(f"  {s.name}: {s.source}" for s in REGISTRY.values())
