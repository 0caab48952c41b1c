"""Generation through SGLang's native HTTP API (`POST /generate`).

We send the rendered ChatML prompt as `text` rather than using the
OpenAI-compatible chat endpoint: the exact prompt is then ours (stored for
provenance), and SGLang's finish_reason object comes back unflattened.

Seams for later work (not built yet):
- streaming: `_payload` sets "stream": True and `generate` reads server-sent
  events (each `data:` chunk carries the cumulative text, the stream ends with
  `data: [DONE]`), handing each chunk to a callback (e.g. a loop detector);
- early abort: `POST /abort_request {"rid": request.rid}` — every request
  already carries our own rid for this;
- token-level data: `_payload` adds "return_logprob": True and `_parse_result`
  reads `meta_info.output_token_logprobs`.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from workers.generation.backend import GenerationError
from workers.generation.chat_template import render_chatml
from workers.generation.request import GenerationRequest, GenerationResult


class _TransientError(Exception):
    """Worth another attempt: the server is unreachable, restarting or overloaded."""


def _server_message(response: httpx.Response) -> str:
    """The error text SGLang put in its answer (`{"error": {"message": ...}}` or similar)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "message" in body:
            return str(body["message"])
    return str(body)[:500]


class SGLangBackend:
    """Calls one SGLang server (or router). Create it inside the worker process:
    an httpx client must not cross a fork."""

    name = "sglang"

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        timeout_s: float = 1800.0,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if retries < 1:
            raise ValueError(f"retries is the number of attempts and must be >= 1, got {retries}")
        self.url = url.rstrip("/")
        self.model = model  # informational: SGLang serves one model; kept for provenance
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # Long read timeout: one kernel answer can take many minutes under load.
        # Short connect timeout: a dead host should be noticed (and retried) quickly.
        timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        started = time.monotonic()
        payload = self._payload(request)
        body = self._post_json("/generate", payload)
        return self._parse_result(body, payload["text"], time.monotonic() - started)

    def served_model_path(self) -> str | None:
        """`model_path` from /get_model_info, or None if the server can't say (never raises)."""
        try:
            response = self._client.get("/get_model_info", timeout=min(10.0, self.timeout_s))
            response.raise_for_status()
            return response.json().get("model_path")
        except (httpx.HTTPError, ValueError, AttributeError):
            return None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SGLangBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        """The /generate body for one request (see the module docstring for what streaming
        and logprobs would add here)."""
        return {
            "text": render_chatml(request.messages, request.enable_thinking),
            "sampling_params": request.sampling.to_sglang(),
            "rid": request.rid,
            "stream": False,
        }

    def _post_json(self, path: str, payload: dict[str, Any]) -> Any:
        """POST with retries on transient failures; GenerationError when they run out."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception_type(_TransientError),
            reraise=True,
        )
        try:
            return retrying(self._post_once, path, payload)
        except _TransientError as exc:
            raise GenerationError(
                f"SGLang server at {self.url} unreachable after {self.retries} attempts: {exc}"
            ) from exc

    def _post_once(self, path: str, payload: dict[str, Any]) -> Any:
        try:
            response = self._client.post(path, json=payload)
        except httpx.ReadTimeout as exc:
            # Not retried: the server is alive and may still be generating this request;
            # sending it again would only pile more work on it.
            raise GenerationError(
                f"SGLang server at {self.url} did not answer {path} within {self.timeout_s}s"
            ) from exc
        except httpx.TransportError as exc:  # refused, reset, connect timeout, dropped connection
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise _TransientError(f"HTTP {response.status_code}: {_server_message(response)}")
        if response.status_code >= 400:
            # A 4xx will not change on retry (e.g. SGLang's 400 for invalid sampling params).
            raise GenerationError(
                f"SGLang server at {self.url} rejected {path} (HTTP {response.status_code}): "
                f"{_server_message(response)}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise GenerationError(
                f"SGLang server at {self.url} answered {path} with non-JSON: {response.text[:300]!r}"
            ) from exc

    def _parse_result(self, body: Any, prompt: str, latency_s: float) -> GenerationResult:
        if not (isinstance(body, dict) and isinstance(body.get("text"), str) and isinstance(body.get("meta_info"), dict)):
            raise GenerationError(
                f"SGLang server at {self.url} answered /generate without text/meta_info: {str(body)[:300]}"
            )
        meta = body["meta_info"]
        finish_reason = meta.get("finish_reason")
        if not (isinstance(finish_reason, dict) and "type" in finish_reason):
            raise GenerationError(
                f"SGLang server at {self.url} answered /generate without a finish_reason object: {str(meta)[:300]}"
            )
        return GenerationResult(
            text=body["text"],
            finish_reason=finish_reason,
            prompt_tokens=meta.get("prompt_tokens"),
            completion_tokens=meta.get("completion_tokens"),
            cached_tokens=meta.get("cached_tokens"),
            output_ids=body.get("output_ids"),
            latency_s=latency_s,
            backend=self.name,
            prompt_text=prompt,
        )
