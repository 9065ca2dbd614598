"""The load loop of ``lamps agents``: closed-loop users replaying traced conversations against
a server, on the wall clock.

The replay's own flow (``lamps.replay.flows.UserLoop``) decides everything but the clock: the
seeded trace order, the conversation a user starts once its previous one and all that one's
sub-agents have ended, the sub-agents that start together once their parent's previous turn
has answered while the parent waits for all of them, each turn's gap (a tool's as traced, a
person's capped by ``--max-human-seconds``) and each turn's prompt tokens (``flow.traced``).
Its events happen here in real time: ``Start`` sends a conversation's first turn now,
``Resume(rec, k, t)`` sends turn ``k`` at ``t``; each turn is one streaming request
(``lamps.agents.client``), and its answer advances the flow as the simulated engine's does
(``segment_done``, or ``finished`` after the last turn).

A run ends at ``duration`` or, with ``conversations``, once that many of the users'
conversations have started and all have ended (a user whose turn comes after that retires).
Every turn sent ends ``done``, ``failed`` (every attempt failed: its conversation ends there,
its later turns are never sent, and its user moves on) or ``cut`` (in flight when the run
ended, or interrupted). Cancelling the run (Ctrl-C) ends it the same way: it returns what it
has. At the end, every conversation that did not finish gets a 1-token request with
``session_end`` (not measured), so that a LAMPS server frees the turn it parks for it instead
of holding it into the next run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from lamps.agents.client import CompletionClient, TurnOutcome
from lamps.agents.learned_hints import LearnedHints
from lamps.agents.prompts import ConversationPrompts, TokenSpace
from lamps.mechanism.hints import as_vllm_xargs
from lamps.replay.flows import Event, Start, UserLoop
from lamps.replay.records import RequestRecord, TurnRecord
from lamps.workloads import Workload
from lamps.workloads.coding import TracedConversation

DONE, FAILED, CUT, SENT = "done", "failed", "cut", "sent"


@dataclass
class HttpTurn(TurnRecord):
    """A turn sent over HTTP: the replay's turn record and what the server answered.

    Times are seconds since the run started; ``sent`` is the first attempt's send, so a retried
    turn's TTFT includes the failed attempts; ``cached`` is the server's
    ``prompt_tokens_details.cached_tokens`` (None when it reports none)."""

    expected_output: int = 0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    attempts: int = 0
    status: str = SENT
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunSettings:
    """One run: its users and seed, how long, and what every request carries."""

    users: int
    seed: int
    duration: float
    model: str
    session_prefix: str  # unique per run: session ids must not collide with another run's
    conversations: int | None = None  # end once this many users' conversations have ended
    warm_prefix: float = 0.5
    hints: bool = True


@dataclass
class RunOutcome:
    """What one run did: its records, how it ended, and counts of what went wrong."""

    records: list[RequestRecord]
    top_level: set[int]  # arrival indices of the users' conversations (not sub-agents)
    failed: set[int]  # arrival indices of conversations a failed turn ended
    end: float  # seconds from the start to the end of the run
    interrupted: bool
    warm_prefix_tokens: int
    sessions_closed: int
    spliced_tokens: int  # the server's answer tokens put in place of traced ones


class AgentsRun:
    """Drives one run's users against the server (see the module docstring)."""

    def __init__(
        self,
        workload: Workload,
        client: CompletionClient,
        settings: RunSettings,
        space: TokenSpace,
    ) -> None:
        self.client = client
        self.settings = settings
        self.space = space
        self.flow = UserLoop(workload, settings.users, settings.seed, settings.warm_prefix)
        self.tokens = self.flow.traced
        self.hints = LearnedHints() if settings.hints else None
        self.records: list[RequestRecord] = []
        self.top_level: set[int] = set()
        self.failed: set[int] = set()
        self.ended: set[int] = set()  # conversations whose last turn told the server so
        self.prompts: dict[int, ConversationPrompts] = {}  # live conversations' prompt state
        self.spliced_tokens = 0
        self.counts: Counter[str] = Counter()
        self.t0 = time.perf_counter()
        self._started_seen = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._error: BaseException | None = None

    def now(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0

    # -- events ---------------------------------------------------------------------------------

    def _apply(self, events: list[Event]) -> None:
        users_new = {a.index for a in self.flow.started[self._started_seen :]}
        self._started_seen = len(self.flow.started)
        for e in events:
            if not isinstance(e, Start):
                self._spawn(self._turn(e.record, e.segment, e.time))
                continue
            if e.arrival.index in users_new:
                cap = self.settings.conversations
                if cap is not None and len(self.top_level) >= cap:
                    continue  # the user retires
                self.top_level.add(e.arrival.index)
            rec = RequestRecord(e.arrival)
            self.records.append(rec)
            self.counts["conversations"] += 1
            self._spawn(self._turn(rec, 0, e.arrival.time))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()  # a bug: end the run and raise it, never hang
            self._idle.set()
        if not self._tasks:
            self._idle.set()

    # -- one turn -------------------------------------------------------------------------------

    def session_id(self, rec: RequestRecord) -> str:
        """The conversation's session id (unique per run)."""
        return f"{self.settings.session_prefix}-{rec.arrival.index}"

    async def _turn(self, rec: RequestRecord, k: int, at: float) -> None:
        delay = at - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        conv = rec.arrival.request
        assert isinstance(conv, TracedConversation)
        last = k == len(conv.turns) - 1
        expected = conv.turns[k].output_tokens
        prompts = self.prompts.setdefault(rec.arrival.index, ConversationPrompts(self.space))
        body: dict[str, Any] = {
            "model": self.settings.model,
            "prompt": prompts.prompt(self.tokens.prompt(rec, k)),
            "max_tokens": expected,
            "min_tokens": expected,
            "ignore_eos": True,
        }
        if self.hints is not None:
            if k > 0 and rec.turns and rec.turns[-1].finish is not None:
                self.hints.observe_gap(conv.kind, self.now() - rec.turns[-1].finish)
            body["vllm_xargs"] = self.hints.xargs(conv.kind, last=last)
        rec.segment = k
        turn = HttpTurn(k, self.now(), self.tokens.input_tokens(rec, k), expected_output=expected)
        rec.turns.append(turn)
        self.counts["in flight"] += 1
        try:
            outcome = await self.client.complete(body, self.session_id(rec))
        finally:
            self.counts["in flight"] -= 1
        self._note(turn, outcome)
        now = self.now()
        if outcome.completion is not None:
            prompts.answered(outcome.completion.token_ids)
        if turn.status == DONE:
            if self.hints is not None and turn.output_tokens is not None:
                self.hints.observe_output(conv.kind, turn.output_tokens)
            if not last:
                self._apply(self.flow.segment_done(rec, now))
                return
            self.ended.add(rec.arrival.index)
            self.counts["conversations done"] += 1
        else:
            self.failed.add(rec.arrival.index)
            self.counts["conversations failed"] += 1
        rec.finish_time = now
        self.spliced_tokens += self.prompts.pop(rec.arrival.index).spliced_tokens
        self._apply(self.flow.finished(rec, now))

    def _note(self, turn: HttpTurn, outcome: TurnOutcome) -> None:
        turn.attempts = outcome.attempts
        turn.errors = list(outcome.errors)
        self.counts["retried"] += outcome.attempts > 1
        c = outcome.completion
        if c is None:
            turn.status = FAILED
            self.counts["failed"] += 1
            return
        turn.status = DONE
        self.counts["done"] += 1
        turn.first_token = c.first_token - self.t0
        turn.finish = c.finish - self.t0
        turn.prompt_tokens = c.prompt_tokens
        turn.output_tokens = c.completion_tokens
        turn.cached = c.cached_tokens
        turn.computed = c.prompt_tokens - (c.cached_tokens or 0)

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        """Runs until the duration, the last conversation, or cancellation (module docstring)."""
        self.t0 = time.perf_counter()
        self._apply([Start(a) for a in self.flow.initial()])
        interrupted = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.settings.duration)
        except asyncio.TimeoutError:  # the builtin one from Python 3.11
            pass
        except asyncio.CancelledError:
            interrupted = _absorb_cancel()
        end = min(self.now(), self.settings.duration)
        for rec in self.records:
            for t in rec.turns:
                if isinstance(t, HttpTurn) and t.status == SENT:
                    t.status = CUT
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        closed = 0
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._error is not None:
                raise self._error
            closed = await self._close_sessions()
        except asyncio.CancelledError:
            interrupted = _absorb_cancel()
        spliced = self.spliced_tokens + sum(p.spliced_tokens for p in self.prompts.values())
        return RunOutcome(
            self.records, self.top_level, self.failed, end, interrupted,
            self.tokens.warm_tokens, closed, spliced,
        )  # fmt: skip

    async def _close_sessions(self) -> int:
        """A 1-token ``session_end`` request for each conversation that did not end its session
        (module docstring); how many the server answered."""
        if self.hints is None:
            return 0
        open_ = [r for r in self.records if r.turns and r.arrival.index not in self.ended]
        body = {
            "model": self.settings.model,
            "prompt": self.space.ids([0]),
            "max_tokens": 1,
            "vllm_xargs": as_vllm_xargs(session_end=1),
        }
        outcomes = await asyncio.gather(
            *(self.client.complete(body, self.session_id(r)) for r in open_)
        )
        return sum(o.completion is not None for o in outcomes)

    def progress(self) -> str:
        """One line: where the run is."""
        c = self.counts
        return (
            f"  users {self.settings.users} seed {self.settings.seed}: "
            f"{min(self.now(), self.settings.duration):.0f}/{self.settings.duration:g} s | turns "
            f"{c['done']} done, {c['in flight']} in flight, {c['retried']} retried, "
            f"{c['failed']} failed | conversations {c['conversations']} started, "
            f"{c['conversations done']} done, {c['conversations failed']} failed"
        )


def _absorb_cancel() -> bool:
    """The run was cancelled (Ctrl-C): undo the pending cancellation so that the run can end
    its requests and return what it has; True."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
    if uncancel is not None:
        uncancel()
    return True
