"""SGLangDouble: a TEST DOUBLE of SGLang's HTTP server. It is NOT SGLang and runs no model.

Why it exists: no model weights can be downloaded where kturn's tests run, yet
the generation client must be tested against SGLang's real wire protocol. The
double speaks SGLang's native HTTP API and its OpenAI-compatible chat endpoint and
answers with *scripted* continuations, on which it emulates what SGLang does to a
model's output:

- stop strings: generation ends at the step where a stop string first appears in
  the decoded output (SGLang checks after every token; stops completing within
  the same step are tried in list order); the returned text is cut where that
  stop string begins (kept if `no_stop_trim`), and finish_reason is
  {"type": "stop", "matched": "<stop string>"};
- end of turn: a continuation that runs out emits <|im_end|> as one more token:
  {"type": "stop", "matched": 151645};
- length: reaching `max_new_tokens` wins over everything else at that step:
  {"type": "length", "length": max_new_tokens}. Without `max_new_tokens` SGLang's
  default of 128 applies, so a client that forgets to send it is visibly truncated;
- sampling-parameter validation with SGLang's ranges; a bad value or an unknown
  key answers 400 {"error": {"message": ...}};
- prefix caching (RadixAttention): `cached_tokens` is the longest common prefix of
  the prompt with any earlier prompt+output, capped at prompt_tokens - 1 (SGLang
  always computes at least one prompt token);
- decoding speed: `token_rate` tokens per second per request (0: instant), after
  `delay_s` of prefill (time to first token);
- streaming (`"stream": true`): server-sent events, `data: {json}` per chunk and
  `data: [DONE]` at the end. As SGLang does by default, every chunk is cumulative:
  the whole `text`, `output_ids` and `meta_info.output_token_logprobs` so far. A
  chunk goes out every `stream_interval` tokens (the sampling parameter, else the
  server's `--stream-interval`, default 1), and the last one carries finish_reason.
  Intermediate chunks show the decoded text before any stop-string trim, as SGLang's;
- `POST /abort_request {"rid": ...}` (or `{"abort_all": true}`): a running request
  stops decoding at its next step and finishes with
  {"type": "abort", "message": ...}, its partial output included; an unknown rid
  is ignored (answered 200, as SGLang does);
- `return_logprob`: `meta_info.output_token_logprobs` as [logprob, token_id, None]
  triples (the text slot stays None without `return_text_in_logprobs`) and an empty
  `input_token_logprobs` (SGLang's default `logprob_start_len` of -1);
- `input_ids` prompts, when the double has a tokenizer (`tokenizer_path`, a
  `tokenizer.json` for the `tokenizers` library, as SGLang loads the model's): the ids
  are decoded to the prompt text the script is matched against, and prompt_tokens
  is their count;
- `meta_info.weight_version` and `/get_model_info` (`model_path`, `tokenizer_path`,
  `weight_version`); `/health` and `/health_generate` (200, or 503 while `healthy`
  is False);
- `POST /v1/chat/completions` (SGLang started with `--reasoning-parser qwen3`):
  the messages are rendered with Qwen3's ChatML template (`chat_template_kwargs`
  `enable_thinking`, default true), `max_tokens`, `stop` and SGLang's extra
  sampling keys are honoured, `rid` names the request for `/abort_request`; the
  output is split into `reasoning_content` (up to `</think>`; all of it when
  `</think>` never comes) and `content`; `finish_reason` is a string with
  `matched_stop`; `usage` has `prompt_tokens_details.cached_tokens`. Streaming sends
  deltas (`choices[0].delta`; a partial `</think>` is held back), with the usage so far in
  each chunk when `stream_options.continuous_usage_stats`, then a usage chunk when
  `stream_options.include_usage`, then `[DONE]`. `logprobs: true` adds
  `choices[0].logprobs.content` entries.

TOKEN MODEL: one "token" is 4 characters of text (CHARS_PER_TOKEN); counts round up.
Fake `output_ids` are derived from each 4-character chunk (same text, same ids), and
fake logprobs from the ids.

Scripts: a mapping {substring of the prompt: [answer for 1st call, 2nd call, ...]}
(a JSON file in subprocess mode; a bare string means a one-answer list). The longest
key found in the prompt wins (so "" is a catch-all); once a key's list is used up its
last answer repeats. In-process, the script may instead be a callable prompt -> answer.
A prompt no key matches answers 400 naming the double, so a test fails loudly.

Not emulated (answers 400 saying so): streaming a batch, n > 1 chat choices.

Every /generate and /v1/chat/completions body received is recorded, injected
failures included (so retries are visible): in-process via `.requests`, over HTTP at
`GET /_double/requests`. Every decoding is recorded when it ends, in `.streams` /
`GET /_double/streams`: {"rid", "endpoint", "tokens_sent" (output tokens decoded),
"chunks_sent", "aborted", "finish_reason"}; abort bodies in `.aborts` /
`GET /_double/aborts`; `.running` / `GET /_double/running` lists the rids decoding now, and
`.max_running` is the most decodings there were at once. `GET /v1/models` lists the model.

Test controls: `fail_next = N` (or `POST /_double/fail_next {"n": N}`, or
`--fail-next N`) answers 503 to the next N generation calls (`fail_status` picks
another status, e.g. 429); `stop()` / `start()` emulate a dead and restarted server
on the same port; `POST /_double/reset` clears records, counters and the prefix cache.

Subprocess use:
    python tests/sglang_double.py --port 30000 --script script.json [--token-rate 50]
prints "listening on http://127.0.0.1:30000" and then "ready" once it accepts
connections; stops on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
import zlib
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHARS_PER_TOKEN = 4
SGLANG_DEFAULT_MAX_NEW_TOKENS = 128
IM_END_TOKEN_ID = 151645
MODEL_PATH = "Qwen/Qwen3-8B"
THINK_END = "</think>"

# SGLang 0.5's SamplingParams keyword arguments; anything else is refused like SGLang does.
KNOWN_SAMPLING_KEYS = frozenset(
    {
        "max_new_tokens", "min_new_tokens", "stop", "stop_token_ids", "stop_regex",
        "temperature", "top_p", "top_k", "min_p",
        "frequency_penalty", "presence_penalty", "repetition_penalty",
        "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim",
        "n", "json_schema", "regex", "ebnf", "structural_tag", "custom_params",
        "stream_interval", "logit_bias", "sampling_seed",
    }
)
# Chat-completion keys that map onto SGLang's sampling parameters.
CHAT_SAMPLING_KEYS = {
    "max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens", "stop": "stop",
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "repetition_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "no_stop_trim": "no_stop_trim", "seed": "sampling_seed",
}

Script = Mapping[str, Sequence[str] | str] | Callable[[str], str]


class BadRequest(ValueError):
    """Answered as HTTP 400 {"error": {"message": ...}}, SGLang's shape for invalid input."""


def count_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def fake_token_ids(text: str) -> list[int]:
    # Below 151643 so they never collide with Qwen3's special tokens.
    chunks = (text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN))
    return [zlib.crc32(c.encode()) % 151_000 for c in chunks]


def fake_logprob(token_id: int) -> float:
    return -((token_id * 7919) % 10_007) / 2_500.0


# ---------------------------------------------------------------- sampling params


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise BadRequest(message)


def validate_sampling_params(params: Any) -> dict[str, Any]:
    """SGLang's checks (SamplingParams.__init__ + verify); returns params with defaults filled in."""
    _check(isinstance(params, dict), f"sampling_params must be an object, got {type(params).__name__}")
    try:
        return _validated(params)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise BadRequest(f"invalid sampling_params: {exc}") from exc


def _validated(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - KNOWN_SAMPLING_KEYS)
    _check(not unknown, f"SamplingParams.__init__() got unexpected keyword argument(s) {unknown}")
    p = {"max_new_tokens": SGLANG_DEFAULT_MAX_NEW_TOKENS, "min_new_tokens": 0, "stop": [],
         "temperature": 1.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
         "presence_penalty": 0.0, "frequency_penalty": 0.0, "no_stop_trim": False, "stream_interval": None, **params}
    _check(p["temperature"] >= 0, f"temperature must be non-negative, got {p['temperature']}.")
    _check(0 < p["top_p"] <= 1, f"top_p must be in (0, 1], got {p['top_p']}.")
    _check(0 <= p["min_p"] <= 1, f"min_p must be in [0, 1], got {p['min_p']}.")
    _check(p["top_k"] == -1 or p["top_k"] >= 1, f"top_k must be -1 (disable) or at least 1, got {p['top_k']}.")
    _check(-2 <= p["frequency_penalty"] <= 2, f"frequency_penalty must be in [-2, 2], got {p['frequency_penalty']}.")
    _check(-2 <= p["presence_penalty"] <= 2, f"presence_penalty must be in [-2, 2], got {p['presence_penalty']}.")
    _check(0 < p["repetition_penalty"] <= 2, f"repetition_penalty must be in (0, 2], got {p['repetition_penalty']}.")
    _check(isinstance(p["max_new_tokens"], int) and p["max_new_tokens"] >= 0,
           f"max_new_tokens must be at least 0, got {p['max_new_tokens']}.")
    _check(0 <= p["min_new_tokens"] <= p["max_new_tokens"],
           f"min_new_tokens must be in [0, max_new_tokens], got {p['min_new_tokens']}.")
    _check(p["stream_interval"] is None or (isinstance(p["stream_interval"], int) and p["stream_interval"] >= 1),
           f"stream_interval must be a positive integer, got {p['stream_interval']}.")
    stop = [p["stop"]] if isinstance(p["stop"], str) else p["stop"]
    _check(isinstance(stop, list) and all(isinstance(s, str) for s in stop), "stop must be a string or a list of strings")
    p["stop"] = stop
    return p


# ---------------------------------------------------------------- decoding emulation


@dataclass(frozen=True)
class Decoded:
    text: str
    finish_reason: dict[str, Any]
    output_ids: list[int]

    @property
    def completion_tokens(self) -> int:
        return len(self.output_ids)


def _first_stop(continuation: str, stops: list[str]) -> tuple[int, str] | None:
    """(step at which it completes, stop string) of the stop SGLang would match first."""
    candidates = []
    for order, stop in enumerate(stops):
        pos = continuation.find(stop) if stop else -1
        if pos >= 0:
            candidates.append((count_tokens(continuation[: pos + len(stop)]), order, stop))
    if not candidates:
        return None
    step, _, stop = min(candidates)  # earliest step; list order breaks ties within a step
    return step, stop


def emulate_decoding(continuation: str, params: dict[str, Any]) -> Decoded:
    """What SGLang would return if the model produced `continuation` then <|im_end|>.
    Per step SGLang checks, in this order: length, end token, stop strings."""
    max_new = params["max_new_tokens"]
    ids = fake_token_ids(continuation)
    eos_step = len(ids) + 1
    stop = _first_stop(continuation, params["stop"])
    end_step = stop[0] if stop else eos_step
    if max_new <= end_step:
        text = continuation[: max_new * CHARS_PER_TOKEN]
        return Decoded(text, {"type": "length", "length": max_new}, ids[:max_new])
    if stop is None:
        return Decoded(continuation, {"type": "stop", "matched": IM_END_TOKEN_ID}, ids + [IM_END_TOKEN_ID])
    step, matched = stop
    decoded = continuation[: step * CHARS_PER_TOKEN]
    # SGLang trims the text where the matched stop begins; the output ids stay whole.
    text = decoded if params["no_stop_trim"] else decoded[: decoded.find(matched)]
    return Decoded(text, {"type": "stop", "matched": matched}, ids[:step])


@dataclass(frozen=True)
class Step:
    """The state of a decoding after `tokens` output tokens: what a streamed chunk shows."""

    text: str
    output_ids: list[int]
    finish_reason: dict[str, Any] | None  # set on the last step only

    @property
    def tokens(self) -> int:
        return len(self.output_ids)


def decoding_steps(continuation: str, decoded: Decoded, interval: int) -> Iterator[Step]:
    """The chunk boundaries of a streamed decoding: every `interval` tokens, then the end.
    Before the end the text is the raw decoded text (no stop-string trim yet)."""
    total = decoded.completion_tokens
    for tokens in range(interval, total, interval):
        yield Step(continuation[: tokens * CHARS_PER_TOKEN], decoded.output_ids[:tokens], None)
    yield Step(decoded.text, decoded.output_ids, decoded.finish_reason)


def split_reasoning(output: str, thinking: bool, final: bool = True) -> tuple[str, str]:
    """(reasoning_content, content) as SGLang's qwen3 reasoning parser splits an output. While the
    output is still streaming (not `final`), a partial tag and the newlines before it are held back."""
    if not thinking:
        return "", output
    if not final and "<think>".startswith(output):
        return "", ""
    body = output.removeprefix("<think>").lstrip("\n")
    if THINK_END not in body:  # reasoning that never closed: all of it is reasoning
        return (body if final else _hold_back_partial_tag(body)), ""
    reasoning, _, content = body.partition(THINK_END)
    return reasoning.rstrip("\n"), content.lstrip("\n")


def _hold_back_partial_tag(text: str) -> str:
    for size in range(len(THINK_END) - 1, 0, -1):
        if text.endswith(THINK_END[:size]):
            text = text[:-size]
            break
    return text.rstrip("\n")


def render_chat(messages: Any, thinking: bool) -> str:
    """Qwen3's ChatML, as the server's chat template renders a conversation for an answer."""
    _check(isinstance(messages, list) and messages, "messages must be a non-empty list")
    _check(all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user", "assistant")
               for m in messages), "each message needs a role (system, user, assistant) and a string content")
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n")


# ---------------------------------------------------------------- scripted "model"


class ScriptedModel:
    """Chooses the continuation for a prompt (see the module docstring for the rule)."""

    def __init__(self, script: Script) -> None:
        self._fn = script if callable(script) else None
        self._answers = {} if callable(script) else {k: [v] if isinstance(v, str) else list(v) for k, v in script.items()}
        self._calls: Counter[str] = Counter()

    def continuation(self, prompt: str) -> str:
        if self._fn is not None:
            return self._fn(prompt)
        matching = [k for k in self._answers if k in prompt and self._answers[k]]
        if not matching:
            raise BadRequest(f"SGLangDouble: no script entry matches the prompt (keys: {list(self._answers)})")
        key = max(matching, key=len)
        answers = self._answers[key]
        index = min(self._calls[key], len(answers) - 1)
        self._calls[key] += 1
        return answers[index]

    def reset(self) -> None:
        self._calls.clear()


def _common_prefix_len(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def _load_tokenizer(path: str | None):
    if path is None:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


# ---------------------------------------------------------------- the double


@dataclass
class Decoding:
    """One request being decoded: what the endpoints turn into chunks or an answer."""

    rid: str
    endpoint: str
    prompt: str
    prompt_tokens: int
    continuation: str
    params: dict[str, Any]
    decoded: Decoded
    started: float


class SGLangDouble:
    """In-process: `with SGLangDouble(script) as double: ... double.url ... double.requests`."""

    def __init__(self, script: Script, *, host: str = "127.0.0.1", port: int = 0,
                 fail_next: int = 0, delay_s: float = 0.0, model_path: str = MODEL_PATH,
                 token_rate: float = 0.0, stream_interval: int = 1, weight_version: str = "default",
                 tokenizer_path: str | None = None) -> None:
        self.host, self.port = host, port
        self.delay_s = delay_s  # emulated prefill time (time to the first token)
        self.token_rate = token_rate  # output tokens per second per request; 0: instant
        self.stream_interval = stream_interval  # the server's --stream-interval
        self.model_path = model_path
        self.weight_version = weight_version
        self.tokenizer_path = tokenizer_path
        self.healthy = True
        self.fail_status = 503
        self._tokenizer = _load_tokenizer(tokenizer_path)
        self._model = ScriptedModel(script)
        self._lock = threading.Lock()
        self._requests: list[Any] = []
        self._aborts: list[Any] = []
        self._streams: list[dict[str, Any]] = []
        self._running: dict[str, threading.Event] = {}  # rid -> set when aborted
        self.max_running = 0  # the most decodings at once
        # Sorted, so the longest prefix a prompt shares with any of them is shared with one of the two
        # next to its place: a lookup stays cheap as a run's thousands of prompts accumulate.
        self._cached_sequences: list[str] = []
        self._fail_next = fail_next
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> SGLangDouble:
        server = _Server((self.host, self.port), _Handler)  # reuses the port after stop()
        server.daemon_threads = True
        server.double = self  # type: ignore[attr-defined]
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; connections are refused until start() (same port)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()  # type: ignore[union-attr]
        self._server = self._thread = None

    def __enter__(self) -> SGLangDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- test controls and records

    @property
    def requests(self) -> list[Any]:
        """Every generation body received (/generate and /v1/chat/completions), in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def aborts(self) -> list[Any]:
        with self._lock:
            return list(self._aborts)

    @property
    def streams(self) -> list[dict[str, Any]]:
        """One record per finished decoding, in the order they ended (a copy)."""
        with self._lock:
            return [dict(s) for s in self._streams]

    @property
    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    @property
    def fail_next(self) -> int:
        with self._lock:
            return self._fail_next

    @fail_next.setter
    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail_next = n

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._aborts.clear()
            self._streams.clear()
            self._cached_sequences.clear()
            self._fail_next = 0
            self.max_running = 0
            self._model.reset()

    # -- endpoints (return status and a JSON-able body, or 200 and an iterator of SSE chunks)

    def handle_generate(self, body: Any) -> tuple[int, Any]:
        return self._guarded(body, self._generate)

    def handle_chat(self, body: Any) -> tuple[int, Any]:
        return self._guarded(body, self._chat)

    def handle_abort(self, body: Any) -> tuple[int, Any]:
        with self._lock:
            self._aborts.append(body)
            if isinstance(body, dict) and body.get("abort_all"):
                targets = list(self._running.values())
            else:
                rid = body.get("rid") if isinstance(body, dict) else None
                targets = [self._running[rid]] if rid in self._running else []  # unknown rids are ignored
        for aborted in targets:
            aborted.set()
        return 200, {}

    def health(self) -> tuple[int, Any]:
        return (200, None) if self.healthy else (503, {"error": {"message": "SGLangDouble: not healthy"}})

    def model_info(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "tokenizer_path": self.model_path, "is_generation": True,
                "weight_version": self.weight_version}

    def _guarded(self, body: Any, handler: Callable[[Any], Any]) -> tuple[int, Any]:
        with self._lock:
            self._requests.append(body)  # recorded first, so failed attempts are visible too
            if self._fail_next > 0:
                self._fail_next -= 1
                return self.fail_status, {"error": {"message": "SGLangDouble: injected failure (fail_next)"}}
        try:
            return 200, handler(body)
        except BadRequest as exc:
            return 400, {"error": {"message": str(exc)}}

    # -- native /generate

    def _generate(self, body: Any) -> Any:
        _check(isinstance(body, dict), "request body must be a JSON object")
        prompts, is_batch = self._prompts(body)
        params = self._per_item(body.get("sampling_params") or {}, len(prompts), "sampling_params")
        params = [validate_sampling_params(p) for p in params]  # all validated before any generation
        rids = self._rids(body.get("rid"), len(prompts), is_batch)
        logprobs = bool(body.get("return_logprob"))
        if body.get("stream"):
            _check(not is_batch, "SGLangDouble does not emulate streaming a batch")
            return self._native_stream(self._begin(rids[0], "generate", *prompts[0], params[0]), logprobs)
        answers = []
        for rid, (prompt, prompt_tokens), p in zip(rids, prompts, params):
            decoding = self._begin(rid, "generate", prompt, prompt_tokens, p)
            *_, last = self._steps(decoding)
            answers.append(self._native_chunk(last, decoding, logprobs))
        return answers if is_batch else answers[0]

    def _native_stream(self, decoding: Decoding, logprobs: bool) -> Iterator[dict[str, Any]]:
        steps = self._steps(decoding)
        try:
            for step in steps:
                yield self._native_chunk(step, decoding, logprobs)
        finally:
            steps.close()  # a client that went away ends the decoding

    def _prompts(self, body: dict[str, Any]) -> tuple[list[tuple[str, int]], bool]:
        """(prompt text, prompt tokens) per item, from `text` or (with a tokenizer) `input_ids`; and
        whether the body is a batch."""
        if body.get("input_ids") is not None:
            _check(self._tokenizer is not None, "SGLangDouble: input_ids need a tokenizer (start it with tokenizer_path)")
            ids = body["input_ids"]
            is_batch = bool(ids) and isinstance(ids[0], list)
            batch = ids if is_batch else [ids]
            _check(all(isinstance(i, int) for item in batch for i in item), "input_ids must be a list of integers")
            return [(self._tokenizer.decode(item, skip_special_tokens=False), len(item)) for item in batch], is_batch
        text = body.get("text")
        _check(text is not None, "send 'text' or 'input_ids'")
        prompts = text if isinstance(text, list) else [text]
        _check(all(isinstance(t, str) for t in prompts), "text must be a string or a list of strings")
        return [(t, count_tokens(t)) for t in prompts], isinstance(text, list)

    def _native_chunk(self, step: Step, decoding: Decoding, logprobs: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": decoding.rid,
            "finish_reason": step.finish_reason,
            "prompt_tokens": decoding.prompt_tokens,
            "completion_tokens": step.tokens,
            "cached_tokens": decoding.params["cached_tokens"],
            "weight_version": self.weight_version,
            "e2e_latency": time.monotonic() - decoding.started,
        }
        if logprobs:
            meta["input_token_logprobs"] = []
            meta["output_token_logprobs"] = [[fake_logprob(i), i, None] for i in step.output_ids]
        return {"text": step.text, "output_ids": step.output_ids, "meta_info": meta}

    @staticmethod
    def _per_item(value: Any, n: int, name: str) -> list[Any]:
        if isinstance(value, list):
            _check(len(value) == n, f"{name} has {len(value)} items for a batch of {n}")
            return value
        return [value] * n

    @staticmethod
    def _rids(rid: Any, n: int, is_batch: bool) -> list[str]:
        if rid is None:
            return [uuid.uuid4().hex for _ in range(n)]
        if is_batch:
            _check(isinstance(rid, list) and len(rid) == n, "The rid should be a list for batch processing.")
            return rid
        _check(isinstance(rid, str), "rid must be a string")
        return [rid]

    # -- OpenAI-compatible /v1/chat/completions

    def _chat(self, body: Any) -> Any:
        _check(isinstance(body, dict), "request body must be a JSON object")
        _check(body.get("n", 1) == 1, "SGLangDouble does not emulate n > 1")
        thinking = bool((body.get("chat_template_kwargs") or {}).get("enable_thinking", True))
        prompt = render_chat(body.get("messages"), thinking)
        params = validate_sampling_params({CHAT_SAMPLING_KEYS[k]: v for k, v in body.items() if k in CHAT_SAMPLING_KEYS and v is not None})
        rid = body.get("rid") or f"chatcmpl-{uuid.uuid4().hex}"
        _check(isinstance(rid, str), "rid must be a string")
        decoding = self._begin(rid, "chat", prompt, count_tokens(prompt), params)
        reasoning = thinking and body.get("separate_reasoning", True)
        if body.get("stream"):
            return self._chat_stream(decoding, body, reasoning)
        *_, last = self._steps(decoding)
        reasoning_content, content = split_reasoning(last.text, reasoning)
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning_content or None}
        choice = {"index": 0, "message": message, **self._chat_finish(last),
                  "logprobs": self._chat_logprobs(last.output_ids) if body.get("logprobs") else None}
        return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": self.model_path,
                "choices": [choice], "usage": self._usage(decoding, last)}

    def _chat_stream(self, decoding: Decoding, body: dict[str, Any], reasoning: bool) -> Iterator[dict[str, Any]]:
        sent_reasoning = sent_content = ""
        sent_ids = 0
        last = Step("", [], None)
        steps = self._steps(decoding)
        try:
            for step in steps:
                last = step
                reasoning_content, content = split_reasoning(step.text, reasoning, final=step.finish_reason is not None)
                delta: dict[str, Any] = {"role": "assistant"} if sent_ids == 0 else {}
                # Deltas of the cumulative text, as SGLang's server computes them (a trimmed stop yields none).
                if reasoning_content.startswith(sent_reasoning) and len(reasoning_content) > len(sent_reasoning):
                    delta["reasoning_content"] = reasoning_content[len(sent_reasoning):]
                    sent_reasoning = reasoning_content
                if content.startswith(sent_content) and len(content) > len(sent_content):
                    delta["content"] = content[len(sent_content):]
                    sent_content = content
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
                if body.get("logprobs"):
                    choice["logprobs"] = self._chat_logprobs(step.output_ids[sent_ids:])
                sent_ids = step.tokens
                if step.finish_reason is not None:
                    choice.update(self._chat_finish(step))
                chunk = {"id": decoding.rid, "object": "chat.completion.chunk", "model": self.model_path, "choices": [choice]}
                if (body.get("stream_options") or {}).get("continuous_usage_stats"):
                    chunk["usage"] = self._usage(decoding, step)
                yield chunk
        finally:
            steps.close()  # a client that went away ends the decoding
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {"id": decoding.rid, "object": "chat.completion.chunk", "choices": [], "usage": self._usage(decoding, last)}

    @staticmethod
    def _chat_finish(step: Step) -> dict[str, Any]:
        finish = step.finish_reason or {}
        return {"finish_reason": finish.get("type"), "matched_stop": finish.get("matched")}

    @staticmethod
    def _chat_logprobs(ids: list[int]) -> dict[str, Any]:
        return {"content": [{"token": f"t{i}", "logprob": fake_logprob(i), "bytes": None, "top_logprobs": []} for i in ids]}

    @staticmethod
    def _usage(decoding: Decoding, last: Step) -> dict[str, Any]:
        return {"prompt_tokens": decoding.prompt_tokens, "completion_tokens": last.tokens,
                "total_tokens": decoding.prompt_tokens + last.tokens,
                "prompt_tokens_details": {"cached_tokens": decoding.params["cached_tokens"]}}

    # -- decoding, shared by both endpoints

    def _begin(self, rid: str, endpoint: str, prompt: str, prompt_tokens: int, params: dict[str, Any]) -> Decoding:
        with self._lock:  # the script's call counters are shared state
            continuation = self._model.continuation(prompt)
            self._running[rid] = threading.Event()
            self.max_running = max(self.max_running, len(self._running))
        cached = self._match_prefix(prompt, prompt_tokens)
        return Decoding(rid, endpoint, prompt, prompt_tokens, continuation, {**params, "cached_tokens": cached},
                        emulate_decoding(continuation, params), time.monotonic())

    def _steps(self, decoding: Decoding) -> Iterator[Step]:
        """The decoding's chunk boundaries, paced at token_rate. An abort ends it at once with the
        tokens decoded by then. Always records the decoding (and caches its prefix) when it ends:
        before its last chunk is sent (a client that has it may look at the record at once), or
        when the client goes away."""
        aborted = self._running[decoding.rid]
        interval = decoding.params["stream_interval"] or self.stream_interval
        last = Step("", [], None)
        chunks = 0
        recorded = False
        try:
            aborted.wait(self.delay_s)
            decoding_started = time.monotonic()
            for step in decoding_steps(decoding.continuation, decoding.decoded, interval):
                if self._aborted_before(aborted, decoding_started, step.tokens):
                    tokens = self._tokens_by_now(decoding_started, last.tokens, step.tokens)
                    step = Step(decoding.continuation[: tokens * CHARS_PER_TOKEN], decoding.decoded.output_ids[:tokens],
                                {"type": "abort", "message": "Abort requested by /abort_request"})
                last = step
                chunks += 1
                if step.finish_reason is not None:
                    self._finish(decoding, last, chunks)
                    recorded = True
                yield step
                if recorded:
                    break
        finally:
            if not recorded:
                self._finish(decoding, last, chunks)

    def _aborted_before(self, aborted: threading.Event, decoding_started: float, tokens: int) -> bool:
        """Waits until `tokens` are decoded at token_rate; True when an abort came first."""
        if self.token_rate <= 0:
            return aborted.is_set()
        return aborted.wait(max(0.0, decoding_started + tokens / self.token_rate - time.monotonic()))

    def _tokens_by_now(self, decoding_started: float, low: int, high: int) -> int:
        if self.token_rate <= 0:
            return low
        return max(low, min(high, int((time.monotonic() - decoding_started) * self.token_rate)))

    def _finish(self, decoding: Decoding, last: Step, chunks: int) -> None:
        with self._lock:
            self._running.pop(decoding.rid, None)
            insort(self._cached_sequences, decoding.prompt + last.text)
            self._streams.append({
                "rid": decoding.rid, "endpoint": decoding.endpoint, "tokens_sent": last.tokens, "chunks_sent": chunks,
                "aborted": (last.finish_reason or {}).get("type") == "abort",
                "finish_reason": last.finish_reason,  # None: the client went away before the end
            })

    def _match_prefix(self, prompt: str, prompt_tokens: int) -> int:
        """Cached prompt tokens: the longest prefix shared with an earlier prompt+output."""
        with self._lock:
            place = bisect_left(self._cached_sequences, prompt)
            neighbours = self._cached_sequences[max(0, place - 1):place + 1]
            shared = max((_common_prefix_len(prompt, s) for s in neighbours), default=0)
        return max(0, min(shared // CHARS_PER_TOKEN, prompt_tokens - 1))


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # hundreds of clients connect at once in the benchmarks


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stop() really ends service
    # (a kept-alive connection would otherwise outlive the listening socket).
    protocol_version = "HTTP/1.0"
    server_version = "SGLangDouble/1.0"

    @property
    def double(self) -> SGLangDouble:
        return self.server.double  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        routes: dict[str, Callable[[], tuple[int, Any]]] = {
            "/health": self.double.health,
            "/health_generate": self.double.health,
            "/get_model_info": lambda: (200, self.double.model_info()),
            "/v1/models": lambda: (200, {"object": "list", "data": [{"id": self.double.model_path, "object": "model", "owned_by": "sglang"}]}),
            "/_double/requests": lambda: (200, self.double.requests),
            "/_double/aborts": lambda: (200, self.double.aborts),
            "/_double/streams": lambda: (200, self.double.streams),
            "/_double/running": lambda: (200, self.double.running),
        }
        route = routes.get(self.path)
        self._send(*(route() if route else (404, {"detail": "Not Found"})))

    def do_POST(self) -> None:
        try:
            body = self._read_json()
        except ValueError as exc:
            self._send(400, {"error": {"message": f"invalid JSON body: {exc}"}})
            return
        routes: dict[str, Callable[[Any], tuple[int, Any]]] = {
            "/generate": self.double.handle_generate,
            "/v1/chat/completions": self.double.handle_chat,
            "/abort_request": self.double.handle_abort,
            "/_double/fail_next": self._set_fail_next,
            "/_double/reset": self._reset,
        }
        route = routes.get(self.path)
        try:
            status, answer = route(body) if route else (404, {"detail": "Not Found"})
        except Exception as exc:  # a bug in the double (or its script) must not hang the client
            status, answer = 500, {"error": {"message": f"SGLangDouble internal error: {exc!r}"}}
        if isinstance(answer, Iterator):
            self._send_events(answer)
        else:
            self._send(status, answer)

    def _set_fail_next(self, body: Any) -> tuple[int, Any]:
        self.double.fail_next = int(body["n"])
        return 200, {"fail_next": self.double.fail_next}

    def _reset(self, _body: Any) -> tuple[int, Any]:
        self.double.reset()
        return 200, {}

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _send(self, status: int, body: Any) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, chunks: Iterator[dict[str, Any]]) -> None:
        """Server-sent events; the connection's end (HTTP/1.0) ends the body. A client that
        goes away stops the decoding, as SGLang notices eventually."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            chunks.close()  # type: ignore[attr-defined]


def _load_script(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        script = json.load(f)
    if not isinstance(script, dict):
        raise SystemExit(f"{path}: the script must be a JSON object {{prompt substring: [answers]}}")
    return script


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SGLangDouble: a TEST DOUBLE of SGLang's HTTP server (no model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--script", required=True, help="JSON file: {prompt substring: [answer by call order, ...]}")
    parser.add_argument("--fail-next", type=int, default=0, help="answer 503 to the first N generation calls")
    parser.add_argument("--delay-s", type=float, default=0.0, help="emulated prefill time (to the first token)")
    parser.add_argument("--token-rate", type=float, default=0.0, help="output tokens per second per request (0: instant)")
    parser.add_argument("--stream-interval", type=int, default=1, help="tokens per streamed chunk unless the request says")
    parser.add_argument("--weight-version", default="default")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json decoding input_ids prompts")
    args = parser.parse_args(argv)

    double = SGLangDouble(_load_script(args.script), host=args.host, port=args.port,
                          fail_next=args.fail_next, delay_s=args.delay_s, token_rate=args.token_rate,
                          stream_interval=args.stream_interval, weight_version=args.weight_version,
                          tokenizer_path=args.tokenizer)
    # SIGTERM ends the process through SystemExit, so the socket is closed cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    double.start()
    print(f"listening on {double.url}", flush=True)
    print("ready", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        double.stop()


if __name__ == "__main__":
    main()
