"""Derived traces: the single-API variant of a multi-API trace.

InferCept and LAMPS evaluate a multi-API and a single-API version of the same six-type
mixture, with the same number of requests (397 each). The single-API variant keeps, for
each request, its prompt, its first decode segment and the API call that follows it (duration
and returned tokens), then closes with the request's last segment (its final answer): one
call per request, the same prompts, the same final outputs. A request without calls is kept
as it is. This is how this project derives it from the shipped multi-API trace. The LAMPS
authors' own single-API file (`diverse_oneapi_merged_exp_uniform.json` in
`mars-repository/mars-codebase`, about 7.7 s of API time per request) is public and shipped
too, as `builtin:mars-single-api` (lamps/data/NOTICE.md): the paper-comparable trace.
"""

from __future__ import annotations

from lamps.workloads.model import Workload, WorkloadRequest


def single_api(workload: Workload, name: str | None = None) -> Workload:
    """One API call per request: first segment + its call, then the last segment."""
    requests = []
    for r in workload.requests:
        if r.num_api_calls <= 1:
            requests.append(r)
            continue
        first = next(s for s in r.segments if s.has_api)
        requests.append(
            WorkloadRequest(r.request_id, r.prompt_tokens, (first, r.segments[-1]), r.kind)
        )
    return Workload(name or f"{workload.name}-single-api", tuple(requests))
