"""One turn over HTTP: a streaming ``/v1/completions`` request of token ids, timed and retried.

The body carries the turn's whole context as token ids (``prompt``), ``max_tokens`` and
``min_tokens`` both the traced output with ``ignore_eos``, so the server generates exactly that
many tokens; ``stream`` with ``stream_options.include_usage`` (the last chunk's usage gives the
prompt tokens, the generated tokens and, from a vLLM server started with
``--enable-prompt-tokens-details``, ``prompt_tokens_details.cached_tokens``);
``return_token_ids`` (vLLM's: the generated ids, which ``lamps.agents.prompts`` puts into the
conversation's next prompt; vLLM echoes the prompt's ids too, once); the session id both
as the ``X-Session-ID`` header and the body's ``session_id`` (vLLM reads either, vllm-router only
the header: ``docs/many-engines.md``); and the LAMPS hints in ``vllm_xargs``.

Times come from the caller's clock: the first token is the first chunk that carries a choice
(vLLM sends none while it prefills), the finish is the end of the stream.

An attempt fails on a connection error or timeout, on HTTP 5xx, 408 or 429, on an error event
in the stream, or when the stream ends before its ``[DONE]``; it is then retried, ``retries``
more times, after ``retry_delay`` seconds doubling each time. Any other status (400: a prompt
longer than the model's context, 404: an unknown model) means the request itself is wrong and
is not retried. ``complete`` returns what happened either way; it raises nothing but
cancellation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

KEEPALIVE_SECONDS = 2.0
"""How long the client keeps an idle connection for the next request."""
RETRYABLE_STATUS = frozenset({408, 429})
"""HTTP statuses below 500 that say "try again" (timeout, too many requests)."""


class AttemptError(Exception):
    """One attempt of a request failed (``retryable``: the same request may succeed later)."""

    def __init__(self, kind: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.retryable = retryable


@dataclass(frozen=True)
class Completion:
    """A request the server answered: when, and its usage."""

    first_token: float
    finish: float
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None  # None: the server did not report prompt_tokens_details
    token_ids: list[int] | None = None  # the generated ids (None: the server sent none)


@dataclass
class TurnOutcome:
    """A turn's request after its attempts: the completion, or None if every attempt failed."""

    completion: Completion | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # one line per failed attempt


def _usage(obj: dict[str, Any]) -> tuple[int, int, int | None]:
    usage = obj["usage"]
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens")
    return int(usage["prompt_tokens"]), int(usage["completion_tokens"]), cached


class CompletionClient:
    """Streaming completions against one OpenAI-compatible base URL (``.../v1``)."""

    def __init__(
        self,
        base_url: str,
        *,
        clock: Callable[[], float],
        timeout: float = 600.0,
        retries: int = 2,
        retry_delay: float = 1.0,
        api_key: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries}")
        if not (timeout > 0 and retry_delay >= 0):
            raise ValueError(f"need timeout > 0 and retry delay >= 0, got {timeout}, {retry_delay}")
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.retries = retries
        self.retry_delay = retry_delay
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CompletionClient:
        # No connection limit: a client-side queue would add to the server's TTFT. An idle
        # connection is closed well before a server's keep-alive timeout (uvicorn's, vLLM's:
        # 5 s), so a turn never reuses one the server is closing at that moment.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("CompletionClient used outside 'async with'")
        return self._session

    async def models(self) -> list[dict[str, Any]]:
        """The server's ``/v1/models`` entries (ValueError naming the URL if unreachable)."""
        url = f"{self.base_url}/models"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                status, text = r.status, await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise ValueError(f"{url}: no server answers there ({type(e).__name__}: {e})") from e
        if status != 200:
            raise ValueError(f"{url}: HTTP {status}: {text[:200]}")
        try:
            return list(json.loads(text)["data"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{url}: not an OpenAI model list: {text[:200]!r}") from e

    async def metrics_text(self) -> str | None:
        """The server's Prometheus ``/metrics`` (beside ``/v1``), or None where it has none."""
        root = self.base_url.removesuffix("/v1")
        try:
            async with self.session.get(
                f"{root}/metrics", timeout=aiohttp.ClientTimeout(total=30)
            ) as r:
                return await r.text() if r.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    async def complete(self, body: dict[str, Any], session_id: str) -> TurnOutcome:
        """Sends ``body`` (stream and usage options added) until it succeeds or the retries
        are spent."""
        body = {
            **body,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        }
        if session_id:
            body["session_id"] = session_id
        headers = {"X-Session-ID": session_id} if session_id else {}
        outcome = TurnOutcome()
        while True:
            outcome.attempts += 1
            try:
                outcome.completion = await self._attempt(body, headers)
                return outcome
            except AttemptError as e:
                outcome.errors.append(str(e))
                if not e.retryable or outcome.attempts > self.retries:
                    return outcome
            await asyncio.sleep(self.retry_delay * 2 ** (outcome.attempts - 1))

    async def _attempt(self, body: dict[str, Any], headers: dict[str, str]) -> Completion:
        try:
            async with self.session.post(
                f"{self.base_url}/completions", json=body, headers=headers
            ) as r:
                if r.status != 200:
                    text = (await r.text())[:300]
                    retry = r.status >= 500 or r.status in RETRYABLE_STATUS
                    raise AttemptError(f"http {r.status}", text, retryable=retry)
                return await self._read_stream(r)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise AttemptError("connection", repr(e), retryable=True) from e

    async def _read_stream(self, r: aiohttp.ClientResponse) -> Completion:
        first: float | None = None
        usage: tuple[int, int, int | None] | None = None
        ids: list[int] | None = None
        async for data in _sse_data(r.content):
            if data == b"[DONE]":
                if usage is None:
                    raise AttemptError(
                        "no usage", "the stream carried no usage (stream_options.include_usage)",
                        retryable=False,
                    )  # fmt: skip
                if first is None:
                    raise AttemptError("no token", "the stream ended without a token",
                                       retryable=True)  # fmt: skip
                return Completion(first, self.clock(), *usage, token_ids=ids)
            try:
                obj = json.loads(data)
            except json.JSONDecodeError as e:
                raise AttemptError("bad chunk", data[:200].decode(errors="replace"),
                                   retryable=True) from e  # fmt: skip
            if "error" in obj:
                err = obj["error"] if isinstance(obj["error"], dict) else {"message": obj["error"]}
                code = err.get("code")
                retry = not isinstance(code, int) or code >= 500 or code in RETRYABLE_STATUS
                raise AttemptError("stream error", str(err.get("message"))[:300], retryable=retry)
            for choice in obj.get("choices") or ():
                if first is None:
                    first = self.clock()
                if isinstance(choice.get("token_ids"), list):
                    ids = ids if ids is not None else []
                    ids.extend(choice["token_ids"])
            if obj.get("usage"):
                try:
                    usage = _usage(obj)
                except (KeyError, TypeError, ValueError) as e:
                    raise AttemptError("bad usage", repr(obj["usage"])[:200],
                                       retryable=False) from e  # fmt: skip
        raise AttemptError("stream cut", "the stream ended before [DONE]", retryable=True)


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a server-sent event stream, of any length."""
    buf = bytearray()
    async for chunk in content.iter_any():
        buf += chunk
        while (end := buf.find(b"\n")) >= 0:
            line = bytes(buf[:end]).strip()
            del buf[: end + 1]
            if line.startswith(b"data:"):
                yield line[5:].strip()
