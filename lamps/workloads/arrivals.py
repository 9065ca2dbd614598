"""Arrivals: Poisson arrival times over a window, request templates sampled with replacement.

The paper's driver (InferCept's ``final_tput_bench_real.py``) samples templates with
replacement and spaces them as a Poisson process; it also starts ``int(qps) + 1`` requests at
t=0 and draws ``4 * qps * window`` keys up front, which this does not do.
"""

from __future__ import annotations

import math

import numpy as np

from lamps.workloads.model import Arrival, Workload


def poisson_arrivals(
    workload: Workload, qps: float, duration: float, seed: int = 0
) -> list[Arrival]:
    """Poisson arrivals at ``qps`` over ``[0, duration)``, templates sampled with replacement."""
    if not (math.isfinite(qps) and qps > 0):
        raise ValueError(f"qps must be finite and > 0, got {qps}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be finite and > 0, got {duration}")
    rng = np.random.default_rng(seed)
    arrivals: list[Arrival] = []
    t = 0.0
    while True:
        t += float(rng.exponential(1.0 / qps))
        if t >= duration:
            return arrivals
        template = workload.requests[int(rng.integers(len(workload.requests)))]
        arrivals.append(Arrival(len(arrivals), t, template))
