"""Generation through an OpenAI-compatible server (`POST /v1/chat/completions`, streamed): SGLang's
own OpenAI API, vLLM, or any compatible server.

The server applies the chat template (Qwen3's thinking switch goes in `chat_template_kwargs`) and,
started with a reasoning parser, returns the reasoning apart (`reasoning_content`). The stored raw
answer puts it back the way Qwen3 writes it (`<think>\\n...\\n</think>\\n\\n` then the answer), so
the cleaner treats both backends alike, and the loop detector reads that same text as it streams.

Abort: `POST /abort_request {"rid"}` where the server has it (SGLang; the rid travels in the
request), and the stream is closed in any case (vLLM aborts a request whose client went away).
Token ids are not part of this API: with `record_tokens` the logprobs are stored, the ids are not;
use the sglang backend for exact token ids.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from workers.generation.abort import LOOP, AbortSignal, finish_reason
from workers.generation.backend import GenerationError
from workers.generation.loop_watch import LoopWatch
from workers.generation.request import GenerationRequest, GenerationResult, SamplingParams
from workers.generation.server_backend import ServerBackend
from workers.generation.servers import check_openai_server
from workers.generation.sse import sse_json

SERVER_NAME = "OpenAI-compatible"
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"


def chat_sampling(sampling: SamplingParams) -> dict[str, Any]:
    """The chat-completions form of the sampling parameters (top_k, min_p and repetition_penalty are
    extensions that SGLang and vLLM both accept)."""
    params = sampling.to_sglang()
    body = {"max_tokens": params.pop("max_new_tokens"), **params}
    if "sampling_seed" in body:
        body["seed"] = body.pop("sampling_seed")
    return body


class OpenAIBackend(ServerBackend):
    name = "openai"

    @staticmethod
    def base_url(url: str) -> str:
        return url.rstrip("/").removesuffix("/v1")  # both http://host:8000 and http://host:8000/v1 work

    def generate(self, request: GenerationRequest, abort: AbortSignal | None = None) -> GenerationResult:
        started = time.monotonic()
        abort = abort or AbortSignal()
        payload = self._payload(request)

        def consume(url: str, response: httpx.Response) -> GenerationResult:
            stream = _ChatStream(self, url, request, abort)
            with abort.while_running(stream.stop_on_server):
                stream.read(response)
            return stream.result(time.monotonic() - started)

        if abort.reason is not None:
            return _ChatStream(self, self.url, request, abort).result(time.monotonic() - started)
        return self.pool.stream(self.urls, request.affinity_key or request.rid, "/v1/chat/completions", payload, consume, server_name=SERVER_NAME,
                                hold_s=self.settings.outage_hold_s, poll_s=self.settings.outage_poll_s, abort=abort)

    def server_info(self, url: str):
        return check_openai_server(self.pool, url)

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model or "default",
            "messages": request.messages,
            **chat_sampling(request.sampling),
            "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
            "rid": request.rid,
            "stream": True,
            # Usage in every chunk gives a running token count (tokens after a loop's onset).
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if self.settings.record_tokens:
            payload["logprobs"] = True
        return payload


class _ChatStream:
    def __init__(self, backend: OpenAIBackend, url: str, request: GenerationRequest, abort: AbortSignal) -> None:
        self.backend, self.url, self.request, self.abort = backend, url, request, abort
        self.watch = LoopWatch(backend.settings.loop_abort)
        self.parts: list[str] = []
        self.in_reasoning = False
        self.logprobs: list[float] = []
        self.finish: str | None = None
        self.matched: Any = None
        self.usage: dict[str, Any] = {}
        self._grace_ends: float | None = None

    def read(self, response: httpx.Response) -> None:
        try:
            for chunk in sse_json(response):
                if not isinstance(chunk, dict) or "error" in chunk:
                    raise GenerationError(f"{SERVER_NAME} server at {self.url} streamed an error: {str(chunk)[:300]}")
                self._take(chunk)
                if self._should_stop():
                    return
        except httpx.TransportError:
            if self.abort.reason is None:
                raise

    def _take(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = self._raw_text(delta.get("reasoning_content"), delta.get("content"))
            self.parts.append(text)
            for entry in ((choice.get("logprobs") or {}).get("content") or []):
                self.logprobs.append(float(entry["logprob"]))
            if choice.get("finish_reason") is not None:
                self.finish, self.matched = choice["finish_reason"], choice.get("matched_stop")
            if self.watch.append(text, self._tokens_so_far()):
                self.abort.abort(LOOP)

    def _raw_text(self, reasoning: str | None, content: str | None) -> str:
        """The delta as it lies in the raw answer: reasoning wrapped in <think> ... </think>."""
        text = ""
        if reasoning:
            text += ("" if self.in_reasoning else THINK_OPEN) + reasoning
            self.in_reasoning = True
        if content:
            text += (THINK_CLOSE if self.in_reasoning else "") + content
            self.in_reasoning = False
        return text

    def _tokens_so_far(self) -> int | None:
        if "completion_tokens" in self.usage:
            return int(self.usage["completion_tokens"])
        return len(self.logprobs) if self.logprobs else None

    def _should_stop(self) -> bool:
        if self.abort.reason is None:
            return False
        if self._grace_ends is None:
            self._grace_ends = time.monotonic() + self.backend.settings.abort_grace_s
        return self.finish is not None or time.monotonic() >= self._grace_ends

    def stop_on_server(self) -> None:
        self.backend.abort_on_server(self.url, self.request.rid)

    def result(self, latency_s: float) -> GenerationResult:
        if self.abort.reason is None and self.finish is None:
            raise GenerationError(f"{SERVER_NAME} server at {self.url} ended the stream without a finish_reason")
        text = "".join(self.parts)  # reasoning that never closed stays unclosed, as Qwen3 wrote it
        completion = self.usage.get("completion_tokens")
        loop = self.watch.loop_abort(text, completion)
        details = self.usage.get("prompt_tokens_details") or {}
        return GenerationResult(
            text=text,
            finish_reason=self._finish_reason(loop),
            prompt_tokens=self.usage.get("prompt_tokens"),
            completion_tokens=completion,
            cached_tokens=details.get("cached_tokens"),
            output_ids=None,
            latency_s=latency_s,
            backend=OpenAIBackend.name,
            prompt_text=None,  # the server rendered the prompt
            output_logprobs=self.logprobs or None,
            loop=loop,
            server_url=self.url,
        )

    def _finish_reason(self, loop) -> dict[str, Any]:
        """SGLang's object shape, from the chat API's string and matched_stop."""
        if self.finish is None:
            server = None
        elif self.finish == "length":
            server = {"type": "length", "length": self.request.sampling.max_new_tokens}
        else:
            server = {"type": self.finish, "matched": self.matched}
        return finish_reason(self.abort.reason, server, loop)
