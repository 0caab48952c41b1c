"""Generation through SGLang's native HTTP API (`POST /generate`, streamed).

We render the ChatML prompt ourselves and send it as `text` (or, with a tokenizer, as `input_ids`)
rather than using the OpenAI-compatible chat endpoint: the exact prompt is then ours (stored for
provenance), and SGLang's finish_reason object comes back unflattened.

The answer streams (server-sent events; each chunk carries the whole text so far, SGLang's default)
into the loop detector. When the answer loops, the request is aborted by its `rid`
(`POST /abort_request`: closing the connection is not a reliable abort), the server's last chunk
is read (the tokens decoded until the abort took effect, with their logprobs), and the result says
where the loop began and how much came after. A cancelled run aborts its requests the same way,
through the AbortSignal its worker holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from workers.generation.abort import LOOP, AbortSignal, finish_reason
from workers.generation.backend import GenerationError
from workers.generation.chat_template import render_chatml
from workers.generation.loop_watch import LoopWatch
from workers.generation.request import GenerationRequest, GenerationResult
from workers.generation.server_backend import ServerBackend
from workers.generation.servers import check_sglang_server
from workers.generation.sse import sse_json
from workers.generation.tokenizer import load_tokenizer

SERVER_NAME = "SGLang"


class SGLangBackend(ServerBackend):
    """Calls one or several SGLang servers (or a router) through a shared ServerPool."""

    name = "sglang"

    def __init__(self, urls: str | Sequence[str], **options: Any) -> None:
        super().__init__(urls, **options)
        self._tokenizer = load_tokenizer(self.settings.tokenizer) if self.settings.tokenizer else None

    def generate(self, request: GenerationRequest, abort: AbortSignal | None = None) -> GenerationResult:
        started = time.monotonic()
        abort = abort or AbortSignal()
        prompt = render_chatml(request.messages, request.enable_thinking)
        prompt_ids = self._tokenizer.encode(prompt) if self._tokenizer else None
        payload = self._payload(request, prompt, prompt_ids)

        def consume(url: str, response: httpx.Response) -> GenerationResult:
            return _Stream(self, url, request.rid, abort).read(response, prompt, prompt_ids, started)

        if abort.reason is not None:  # cancelled while it waited: nothing is sent
            return _Stream(self, self.url, request.rid, abort).result(prompt, prompt_ids, time.monotonic() - started)
        return self.pool.stream(self.urls, request.affinity_key or request.rid, "/generate", payload, consume, server_name=SERVER_NAME,
                                hold_s=self.settings.outage_hold_s, poll_s=self.settings.outage_poll_s, abort=abort)

    def server_info(self, url: str):
        return check_sglang_server(self.pool, url)

    def served_model_path(self) -> str | None:
        """`model_path` from the first server's /get_model_info, or None if it can't say (never raises)."""
        try:
            return self.server_info(self.url).model_path
        except GenerationError:
            return None

    def _payload(self, request: GenerationRequest, prompt: str, prompt_ids: list[int] | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "sampling_params": {**request.sampling.to_sglang(), "stream_interval": self.settings.stream_interval},
            "rid": request.rid,
            "stream": True,
        }
        if prompt_ids is not None:
            payload["input_ids"] = prompt_ids
        else:
            payload["text"] = prompt
        if self.settings.record_tokens:
            payload["return_logprob"] = True
        return payload


class _Stream:
    """Reads one streamed /generate answer, aborting it when it loops or when `abort` is set."""

    def __init__(self, backend: SGLangBackend, url: str, rid: str, abort: AbortSignal) -> None:
        self.backend, self.url, self.rid, self.abort = backend, url, rid, abort
        self.watch = LoopWatch(backend.settings.loop_abort)
        self.last: dict[str, Any] | None = None
        self._abort_sent = False
        self._grace_ends: float | None = None

    def read(self, response: httpx.Response, prompt: str, prompt_ids: list[int] | None, started: float) -> GenerationResult:
        with self.abort.while_running(self._stop_on_server):
            self._read_chunks(response)
        return self.result(prompt, prompt_ids, time.monotonic() - started)

    def _read_chunks(self, response: httpx.Response) -> None:
        try:
            for chunk in sse_json(response):
                if not isinstance(chunk, dict) or "error" in chunk:
                    raise GenerationError(f"SGLang server at {self.url} streamed an error: {str(chunk)[:300]}")
                self._take(chunk)
                if self._finished(chunk):
                    return
        except httpx.TransportError:
            if self.abort.reason is None:
                raise  # a dropped stream, retried by the pool
            # Aborted: the server may end the connection instead of sending its last chunk.

    def _take(self, chunk: dict[str, Any]) -> None:
        text, meta = chunk.get("text"), chunk.get("meta_info")
        if not isinstance(text, str) or not isinstance(meta, dict):
            raise GenerationError(f"SGLang server at {self.url} streamed a chunk without text/meta_info: {str(chunk)[:300]}")
        ids, tokens = chunk.get("output_ids"), meta.get("completion_tokens")
        if isinstance(ids, list) and isinstance(tokens, int) and len(ids) < tokens:
            raise GenerationError(f"SGLang server at {self.url} streams incremental chunks (--incremental-streaming-output): "
                                  "kturn reads SGLang's default, cumulative chunks")
        self.last = chunk
        # Cumulative chunks: the new part is what lies past what was fed. At the very end a stop
        # string is trimmed away, so the last text can be shorter: nothing new then.
        if self.watch.append(text[self.watch.chars:], meta.get("completion_tokens")):
            self.abort.abort(LOOP)

    def _finished(self, chunk: dict[str, Any]) -> bool:
        if chunk["meta_info"].get("finish_reason") is not None:
            return True
        if self.abort.reason is None:
            return False
        if not self._abort_sent:  # an abort that reached the server before the request did is lost
            self._stop_on_server()
        if self._grace_ends is None:
            self._grace_ends = time.monotonic() + self.backend.settings.abort_grace_s
        return time.monotonic() >= self._grace_ends  # a server that ignores the abort: stop reading

    def _stop_on_server(self) -> None:
        self._abort_sent = True
        self.backend.abort_on_server(self.url, self.rid)

    def result(self, prompt: str, prompt_ids: list[int] | None, latency_s: float) -> GenerationResult:
        chunk = self.last or {"text": "", "meta_info": {}}
        meta = chunk["meta_info"]
        server_finish = meta.get("finish_reason")
        if self.abort.reason is None and not (isinstance(server_finish, dict) and "type" in server_finish):
            raise GenerationError(f"SGLang server at {self.url} ended the /generate stream without a finish_reason object: {str(meta)[:300]}")
        output_ids, logprobs = _tokens(chunk)
        loop = self.watch.loop_abort(chunk["text"], meta.get("completion_tokens"))
        return GenerationResult(
            text=chunk["text"],
            finish_reason=finish_reason(self.abort.reason, server_finish, loop),
            prompt_tokens=meta.get("prompt_tokens"),
            completion_tokens=meta.get("completion_tokens"),
            cached_tokens=meta.get("cached_tokens"),
            output_ids=output_ids,
            latency_s=latency_s,
            backend=SGLangBackend.name,
            prompt_text=prompt,
            prompt_token_ids=prompt_ids,
            output_logprobs=logprobs,
            loop=loop,
            server_url=self.url,
            weight_version=None if meta.get("weight_version") is None else str(meta["weight_version"]),
        )


def _tokens(chunk: dict[str, Any]) -> tuple[list[int] | None, list[float] | None]:
    """Output ids and logprobs of the last chunk: from the [logprob, id, text] triples when
    logprobs were asked for (one per output token), else `output_ids`."""
    triples = chunk["meta_info"].get("output_token_logprobs")
    if not triples:
        return chunk.get("output_ids"), None
    return [int(t[1]) for t in triples], [float(t[0]) for t in triples]
