"""Steps a vLLM scheduler the way EngineCore does with async scheduling, without a GPU.

`PipelinedDriver` follows `EngineCore.step_with_batch_queue`: with a batch queue of two, step
N+1 is scheduled before the output of step N is applied, so a request can be preempted,
paused or aborted while a token of it is still in flight, and that stale token is delivered
afterwards. The model runner is played by a runner-side view of each request (as vLLM's own
`tests/v1/core/test_async_scheduler.py::PipelinedEngine` does): a step samples a token only
when it reaches the end of the sequence the runner knows, and every sampled token is unique.
Aborts queued with `abort()` are applied before the next output, as `_process_aborts_queue`.
With `queue_size=1` it is the synchronous engine loop.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Any

from vllm.v1.core.sched.output import NewRequestData, SchedulerOutput
from vllm.v1.engine import EngineCoreOutput
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import RequestStatus

from lamps.mechanism.compat import runner_output_ids

# Called with a step's SchedulerOutput when it is scheduled; returns the connector output
# to attach when that step's result comes back (None: nothing to report).
ConnectorWorker = Callable[[SchedulerOutput], Callable[[], KVConnectorOutput | None]]


class PipelinedDriver:
    """Schedules ahead of the model output, like EngineCore's batch queue."""

    def __init__(
        self,
        scheduler: Any,
        queue_size: int = 2,
        connector_worker: ConnectorWorker | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.scheduler = scheduler
        self.queue_size = queue_size
        self.connector_worker = connector_worker
        self.queue: deque[tuple[SchedulerOutput, list[tuple[str, int, int]], Any]] = deque()
        self.runner_view: dict[str, list[int]] = {}
        self.emitted: dict[str, list[int]] = defaultdict(list)
        self.outputs: list[EngineCoreOutput] = []
        self.pending_aborts: list[str] = []
        self.steps = 0
        self._next_token = 1000

    def abort(self, request_id: str) -> None:
        """Queue an abort, applied before the next model output (as EngineCore does)."""
        self.pending_aborts.append(request_id)

    def busy(self) -> bool:
        """Whether the scheduler or the batch queue still has work."""
        return bool(self.queue) or self.scheduler.has_requests()

    def step(self) -> list[EngineCoreOutput]:
        """One call of the engine loop; returns the outputs it produced (maybe none)."""
        self.steps += 1
        sched = self.scheduler
        if sched.has_requests() and len(self.queue) < self.queue_size:
            out = sched.schedule()
            new_reqs = self._snapshot(out)
            report = self.connector_worker(out) if self.connector_worker else None
            self.queue.appendleft((out, new_reqs, report))
            if len(self.queue) < self.queue_size and (
                out.total_num_scheduled_tokens > 0 or sched.has_requests()
            ):
                return []
        if not self.queue:
            # An idle engine core still reads its input queue: aborts apply at once.
            self._apply_aborts()
            return []
        return self._process_oldest()

    def _apply_aborts(self) -> None:
        for request_id in self.pending_aborts:
            self.scheduler.finish_requests(request_id, RequestStatus.FINISHED_ABORTED)
        self.pending_aborts = []

    def _process_oldest(self) -> list[EngineCoreOutput]:
        out, new_reqs, report = self.queue.pop()
        for req_id in out.preempted_req_ids or ():
            self.runner_view.pop(req_id, None)
        for req_id in out.finished_req_ids or ():
            self.runner_view.pop(req_id, None)
        for req_id, seq_len, num_computed in new_reqs:
            self.runner_view[req_id] = [seq_len, num_computed]
        req_ids = list(out.num_scheduled_tokens)
        sampled: list[list[int]] = []
        for req_id in req_ids:
            view = self.runner_view.get(req_id)
            if view is None:
                sampled.append([])
                continue
            end = view[1] + out.num_scheduled_tokens[req_id]
            if end < view[0]:
                view[1] = end
                sampled.append([])
                continue
            token = self._next_token
            self._next_token += 1
            self.emitted[req_id].append(token)
            sampled.append([token])
            view[1] = end
            view[0] = end + 1
        self._apply_aborts()
        mro = ModelRunnerOutput(
            **runner_output_ids(req_ids),
            sampled_token_ids=sampled,
            kv_connector_output=report() if report is not None else None,
        )
        produced: list[EngineCoreOutput] = []
        for eco in self.scheduler.update_from_output(out, mro).values():
            produced.extend(eco.outputs)
        self.outputs.extend(produced)
        return produced

    def _snapshot(self, out: SchedulerOutput) -> list[tuple[str, int, int]]:
        """(request, sequence length, computed) of the requests this step (re)starts.

        What the runner is sent at schedule time: a new request (sessions resuming after a
        pause included) with its prompt, a resumed preempted one with all its tokens (as a new
        request with `prefill_token_ids` from vLLM 0.34, and with the V2 model runner of 0.33).
        """
        snap = [
            (r.req_id, len(_prefill_tokens(r)), r.num_computed_tokens)
            for r in out.scheduled_new_reqs
        ]
        cached = out.scheduled_cached_reqs
        resumed = getattr(cached, "resumed_req_ids", ())  # up to vLLM 0.33
        for i, req_id in enumerate(cached.req_ids):
            if req_id in resumed:
                tokens = cached.all_token_ids.get(req_id)
                seq_len = (
                    len(tokens)
                    if tokens is not None
                    else (self.scheduler.requests[req_id].num_tokens)
                )
                snap.append((req_id, seq_len, cached.num_computed_tokens[i]))
        return snap


def _prefill_tokens(new_request: NewRequestData) -> Sequence[int]:
    """The tokens a new request is sent with: all of a resumed one's, else the prompt."""
    if new_request.prefill_token_ids is not None:
        return new_request.prefill_token_ids
    return new_request.prompt_token_ids or ()
