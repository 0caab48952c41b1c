"""SGLangDouble: a TEST DOUBLE of SGLang's HTTP server. It is NOT SGLang and runs no model.

Why it exists: no model weights can be downloaded where kturn's tests run, yet
the generation client must be tested against SGLang's real wire protocol. The
double speaks SGLang's native HTTP API and answers with *scripted*
continuations, on which it emulates what SGLang does to a model's output:

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
  always computes at least one prompt token).

TOKEN MODEL: one "token" is 4 characters of text (CHARS_PER_TOKEN); counts round up.
Fake `output_ids` are derived from each 4-character chunk (same text, same ids).

Scripts: a mapping {substring of the prompt: [answer for 1st call, 2nd call, ...]}
(a JSON file in subprocess mode; a bare string means a one-answer list). The longest
key found in the prompt wins (so "" is a catch-all); once a key's list is used up its
last answer repeats. In-process, the script may instead be a callable prompt -> answer.
A prompt no key matches answers 400 naming the double, so a test fails loudly.

Not emulated (answers 400 saying so): streaming, return_logprob, input_ids prompts.

Every /generate body received is recorded, injected failures included (so retries are
visible): in-process via `.requests`, over HTTP at `GET /_double/requests`.

Test controls: `fail_next = N` (or `POST /_double/fail_next {"n": N}`, or
`--fail-next N`) answers 503 to the next N /generate calls; `stop()` / `start()`
emulate a dead and restarted server on the same port; `POST /_double/reset`
clears records, counters and the prefix cache.

Subprocess use:
    python tests/sglang_double.py --port 30000 --script script.json
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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHARS_PER_TOKEN = 4
SGLANG_DEFAULT_MAX_NEW_TOKENS = 128
IM_END_TOKEN_ID = 151645
MODEL_PATH = "Qwen/Qwen3-8B"

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

Script = Mapping[str, Sequence[str] | str] | Callable[[str], str]


class BadRequest(ValueError):
    """Answered as HTTP 400 {"error": {"message": ...}}, SGLang's shape for invalid input."""


def count_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def fake_token_ids(text: str) -> list[int]:
    # Below 151643 so they never collide with Qwen3's special tokens.
    chunks = (text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN))
    return [zlib.crc32(c.encode()) % 151_000 for c in chunks]


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
         "presence_penalty": 0.0, "frequency_penalty": 0.0, "no_stop_trim": False, **params}
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


# ---------------------------------------------------------------- the double


class SGLangDouble:
    """In-process: `with SGLangDouble(script) as double: ... double.url ... double.requests`."""

    def __init__(self, script: Script, *, host: str = "127.0.0.1", port: int = 0,
                 fail_next: int = 0, delay_s: float = 0.0, model_path: str = MODEL_PATH) -> None:
        self.host, self.port = host, port
        self.delay_s = delay_s  # emulated generation time per /generate call
        self.model_path = model_path
        self._model = ScriptedModel(script)
        self._lock = threading.Lock()
        self._requests: list[Any] = []
        self._aborts: list[Any] = []
        self._cached_sequences: list[str] = []
        self._fail_next = fail_next
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> SGLangDouble:
        server = ThreadingHTTPServer((self.host, self.port), _Handler)  # reuses the port after stop()
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
        """Every /generate body received, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def aborts(self) -> list[Any]:
        with self._lock:
            return list(self._aborts)

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
            self._cached_sequences.clear()
            self._fail_next = 0
            self._model.reset()

    # -- endpoints (return status, JSON-able body)

    def handle_generate(self, body: Any) -> tuple[int, Any]:
        with self._lock:
            self._requests.append(body)  # recorded first, so failed attempts are visible too
            if self._fail_next > 0:
                self._fail_next -= 1
                return 503, {"error": {"message": "SGLangDouble: injected failure (fail_next)"}}
        try:
            return 200, self._generate(body)
        except BadRequest as exc:
            return 400, {"error": {"message": str(exc)}}

    def handle_abort(self, body: Any) -> tuple[int, Any]:
        with self._lock:
            self._aborts.append(body)
        return 200, {}  # requests finish instantly here, so there is never anything to abort

    def model_info(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "tokenizer_path": self.model_path, "is_generation": True}

    # -- generation

    def _generate(self, body: Any) -> Any:
        _check(isinstance(body, dict), "request body must be a JSON object")
        for flag in ("stream", "return_logprob"):
            _check(not body.get(flag), f"SGLangDouble does not emulate {flag!r}")
        text = body.get("text")
        _check(text is not None, "SGLangDouble only emulates text prompts: send 'text' (input_ids not supported)")
        is_batch = isinstance(text, list)
        prompts = text if is_batch else [text]
        _check(all(isinstance(t, str) for t in prompts), "text must be a string or a list of strings")
        params = self._per_item(body.get("sampling_params") or {}, len(prompts), "sampling_params")
        params = [validate_sampling_params(p) for p in params]  # all validated before any generation
        rids = self._rids(body.get("rid"), len(prompts), is_batch)
        time.sleep(self.delay_s)
        answers = [self._answer(prompt, p, rid) for prompt, p, rid in zip(prompts, params, rids)]
        return answers if is_batch else answers[0]

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

    def _answer(self, prompt: str, params: dict[str, Any], rid: str) -> dict[str, Any]:
        started = time.monotonic()
        with self._lock:  # the script's call counters are shared state
            continuation = self._model.continuation(prompt)
        decoded = emulate_decoding(continuation, params)
        prompt_tokens = count_tokens(prompt)
        cached_tokens = self._match_and_insert_prefix(prompt, prompt + decoded.text, prompt_tokens)
        return {
            "text": decoded.text,
            "output_ids": decoded.output_ids,
            "meta_info": {
                "id": rid,
                "finish_reason": decoded.finish_reason,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": decoded.completion_tokens,
                "cached_tokens": cached_tokens,
                "e2e_latency": time.monotonic() - started + self.delay_s,
            },
        }

    def _match_and_insert_prefix(self, prompt: str, sequence: str, prompt_tokens: int) -> int:
        """Cached prompt tokens, then remember prompt+output as RadixAttention does."""
        with self._lock:
            shared = max((_common_prefix_len(prompt, s) for s in self._cached_sequences), default=0)
            self._cached_sequences.append(sequence)
        return max(0, min(shared // CHARS_PER_TOKEN, prompt_tokens - 1))


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
            "/health": lambda: (200, None),
            "/health_generate": lambda: (200, None),
            "/get_model_info": lambda: (200, self.double.model_info()),
            "/_double/requests": lambda: (200, self.double.requests),
            "/_double/aborts": lambda: (200, self.double.aborts),
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
            "/abort_request": self.double.handle_abort,
            "/_double/fail_next": self._set_fail_next,
            "/_double/reset": self._reset,
        }
        route = routes.get(self.path)
        try:
            status, answer = route(body) if route else (404, {"detail": "Not Found"})
        except Exception as exc:  # a bug in the double (or its script) must not hang the client
            status, answer = 500, {"error": {"message": f"SGLangDouble internal error: {exc!r}"}}
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
    parser.add_argument("--fail-next", type=int, default=0, help="answer 503 to the first N /generate calls")
    parser.add_argument("--delay-s", type=float, default=0.0, help="emulated generation time per /generate call")
    args = parser.parse_args(argv)

    double = SGLangDouble(_load_script(args.script), host=args.host, port=args.port,
                          fail_next=args.fail_next, delay_s=args.delay_s)
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
