"""InferCept as its paper describes it: the swap budget goes to the most wasteful pauses first.

Source: the InferCept paper (Abhyankar et al., ICML 2024, arXiv 2402.01869), "efficient
scheduling across requests": out of the intercepted requests of an iteration, the swap budget
(what one iteration's compute hides) is used for the requests that would otherwise waste the
most, and each remaining request gets the smaller waste of Preserve and Discard. The paper's
text was not available here; this follows the summaries in `shared/docs/baselines-and-
evaluation.md` section 1 and public lecture notes of the paper ("Utilize the swap budget for
otherwise most wasteful requests; then, make the decision for remaining requests"). Its code
(`lamps.baselines.infercept`) does something else: it never swaps at this point, and keeps the
costliest discard candidate preserved as an eviction victim.

Per iteration, over the Preserve pauses (InferCept's own `w_p`/`w_d`, `infercept_model`):
order them by `min(w_p, w_d)`, most wasteful first; swap each out whole while its blocks fit
what is left of the swap-out allowance `t_sout` (and the host pool); of the rest, discard those
with `w_d < w_p` and keep the others preserved. Everything else is the code's: FCFS by original
arrival, 384-token iterations, paced loads within `t_sin`, and passive eviction under memory
pressure (`passive_swap`), whose victims here are the remaining preserved pauses, most
wasteful evicted first (the paper does not say which pauses give way under pressure).
"""

from __future__ import annotations

from vllm.v1.request import Request

from lamps.baselines.infercept import InferCeptScheduler


class InferCeptPaperScheduler(InferCeptScheduler):
    """InferCept with the paper's budgeted swap of the most wasteful pauses."""

    def pause_victims(self, now: float, out_blocks: int) -> tuple[list[Request], int]:
        wastes = sorted(self.pause_wastes(now), key=lambda w: min(w[1], w[2]), reverse=True)
        kept: list[tuple[float, Request]] = []
        for request, w_p, w_d, blocks in wastes:
            if blocks <= out_blocks:
                swapped = self._swap.swap_whole(request)
                if swapped:
                    out_blocks -= swapped
                    del self._preserved[request.request_id]
                    continue
            if w_d < w_p:
                self.discard_pause(request)
            else:
                kept.append((w_p, request))
        kept.sort(key=lambda k: k[0])  # the most wasteful is evicted first (last)
        return [request for _, request in kept], out_blocks
