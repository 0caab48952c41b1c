"""The model servers a generate worker talks to: one shared HTTP connection pool per process, a cap
on requests in flight per server, retries with jittered backoff, and a stable choice of server per
trajectory.

- Several servers: requests are spread by rendezvous hashing of their affinity key (the
  trajectory), so a trajectory's turns all go to the same server and find their prefix in its
  cache; adding or removing a server moves only the trajectories it gains or loses. A single URL
  may also be SGLang's router (`--policy cache_aware`), which does the same on its side.
- Backoff: 429 and 503 (overloaded, starting) and other 5xx are retried on the same server after a
  jittered exponential wait (or the server's Retry-After); a refused or dropped connection tries
  the next server in the trajectory's order. A 4xx other than 429 is the request's fault and is
  not retried; nor is a read timeout (the server is alive and may still be generating).
- Outages: with `hold_s`, the retries go on (every `poll_s` at most) until the servers have been
  unreachable that long, not just for the few quick attempts: a restarting model server is waited
  out instead of failing every turn in flight. An abort (a cancelled run) ends the wait at once.

Create the pool inside the worker process: an httpx client must not cross a fork.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, stop_all, stop_any, wait_random_exponential

from workers.generation.abort import AbortSignal

from workers.generation.backend import GenerationError

log = logging.getLogger("kturn.generation")
T = TypeVar("T")

OVERLOADED = (429, 503)


class TransientError(Exception):
    """Worth another attempt: the server is restarting, overloaded, or its connection dropped."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServerDown(TransientError):
    """The server could not be reached at all: the next attempt tries the next server."""


def rank_servers(urls: Sequence[str], key: str) -> list[str]:
    """Rendezvous (highest random weight) order of `urls` for `key`: stable across processes and
    hosts, and removing a server only moves the keys that ranked it first."""
    def weight(url: str) -> bytes:
        return hashlib.blake2b(f"{url}\0{key}".encode(), digest_size=8).digest()

    return sorted(urls, key=weight, reverse=True)


def server_message(response: httpx.Response) -> str:
    """The error text a server put in its answer (`{"error": {"message": ...}}` or similar)."""
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


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class ServerPool:
    """Shared by every backend of a worker process: one connection pool, one cap per server."""

    def __init__(
        self,
        *,
        max_in_flight_per_server: int = 128,
        timeout_s: float = 1800.0,
        connect_timeout_s: float = 10.0,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 1:
            raise ValueError(f"retries is the number of attempts and must be >= 1, got {retries}")
        if max_in_flight_per_server < 1:
            raise ValueError(f"max_in_flight_per_server must be >= 1, got {max_in_flight_per_server}")
        self.max_in_flight_per_server = max_in_flight_per_server
        self.timeout_s = timeout_s
        self.retries = retries
        self._backoff = wait_random_exponential(multiplier=backoff_s, max=max_backoff_s)
        self._max_backoff_s = max_backoff_s
        # Long read timeout: a queued request may wait minutes for its first token under load.
        # Short connect timeout: a dead host should be noticed (and retried) quickly.
        timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        # The per-server semaphores bound the connections; the pool keeps them all alive for reuse.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        self._client = httpx.Client(timeout=timeout, limits=limits, transport=transport)
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def _slot(self, url: str) -> threading.BoundedSemaphore:
        with self._lock:
            if url not in self._slots:
                self._slots[url] = threading.BoundedSemaphore(self.max_in_flight_per_server)
            return self._slots[url]

    # -- streaming a request, with retries

    def stream(
        self,
        urls: Sequence[str],
        key: str,
        path: str,
        payload: dict[str, Any],
        consume: Callable[[str, httpx.Response], T],
        *,
        server_name: str,
        hold_s: float = 0.0,
        poll_s: float | None = None,
        abort: AbortSignal | None = None,
    ) -> T:
        """POST `payload` to the first server ranked for `key` and hand the open streaming response
        to `consume(url, response)`; retried as the module docstring says (through an outage of up
        to `hold_s`). GenerationError when the attempts run out or the server refuses the request."""
        order = rank_servers(urls, key)
        down = 0
        url = order[0]
        attempts = stop_after_attempt(self.retries)
        retrying = Retrying(
            stop=stop_any(stop_all(attempts, stop_after_delay(hold_s)) if hold_s > 0 else attempts,
                          lambda _state: abort is not None and abort.reason is not None),
            wait=lambda state: min(self._wait(state), poll_s or self._max_backoff_s),
            sleep=abort.sleep if abort is not None else time.sleep,
            retry=retry_if_exception_type(TransientError),
            before_sleep=lambda state: self._log_retry(state, server_name, order[down % len(order)], hold_s),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    url = order[down % len(order)]
                    try:
                        return self._stream_once(url, path, payload, consume, server_name)
                    except ServerDown:
                        down += 1
                        raise
        except TransientError as exc:
            held = retrying.statistics.get("delay_since_first_attempt", 0.0)
            raise GenerationError(f"{server_name} server at {url} unreachable after {retrying.statistics.get('attempt_number', self.retries)} "
                                  f"attempts over {held:.0f} s: {exc}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    @staticmethod
    def _log_retry(state: RetryCallState, server_name: str, url: str, hold_s: float) -> None:
        log.warning("%s server at %s: %s; attempt %d failed, %.0f s into a hold of up to %.0f s, next try in %.1f s",
                    server_name, url, state.outcome.exception(), state.attempt_number, state.seconds_since_start or 0.0, hold_s,
                    state.upcoming_sleep)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        jittered = self._backoff(state)
        retry_after = getattr(error, "retry_after_s", None)
        return jittered if retry_after is None else min(max(retry_after, jittered), self._max_backoff_s)

    def _stream_once(self, url: str, path: str, payload: dict[str, Any], consume: Callable[[str, httpx.Response], T], server_name: str) -> T:
        with self._slot(url):
            try:
                with self._client.stream("POST", url + path, json=payload) as response:
                    if response.status_code != 200:
                        response.read()
                        self._raise_for_status(url, path, response, server_name)
                    return consume(url, response)
            except httpx.ReadTimeout as exc:
                # Not retried: the server is alive and may still be generating this request;
                # sending it again would only pile more work on it.
                raise GenerationError(f"{server_name} server at {url} did not answer {path} within {self.timeout_s}s") from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise ServerDown(f"{type(exc).__name__}: {exc}") from exc
            except httpx.TransportError as exc:  # reset, dropped mid-stream
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _raise_for_status(url: str, path: str, response: httpx.Response, server_name: str) -> None:
        status = response.status_code
        if status in OVERLOADED or status >= 500:
            raise TransientError(f"HTTP {status}: {server_message(response)}", _retry_after(response))
        # Any other 4xx will not change on retry (e.g. SGLang's 400 for invalid sampling params).
        raise GenerationError(f"{server_name} server at {url} rejected {path} (HTTP {status}): {server_message(response)}")

    # -- small calls

    def get_json(self, url: str, path: str, timeout_s: float = 10.0) -> Any:
        """GET a JSON answer; httpx.HTTPError or ValueError when there is none."""
        response = self._client.get(url + path, timeout=min(timeout_s, self.timeout_s))
        response.raise_for_status()
        return response.json() if response.content else None

    def post_quietly(self, url: str, path: str, body: dict[str, Any], timeout_s: float = 5.0) -> bool:
        """POST and say whether the server took it; never raises (used for aborts)."""
        try:
            response = self._client.post(url + path, json=body, timeout=min(timeout_s, self.timeout_s))
        except httpx.HTTPError as exc:
            log.warning("POST %s%s failed: %s", url, path, exc)
            return False
        return response.status_code < 400


@dataclass(frozen=True)
class ServerInfo:
    url: str
    model_path: str | None
    tokenizer_path: str | None
    weight_version: str | None


def check_sglang_server(pool: ServerPool, url: str) -> ServerInfo:
    """Health and identity of one SGLang server, before a run relies on it; GenerationError naming
    the URL and what failed."""
    info = _health_then(pool, url, "/get_model_info")
    return ServerInfo(url, info.get("model_path"), info.get("tokenizer_path"), _as_str(info.get("weight_version")))


def _health_then(pool: ServerPool, url: str, info_path: str) -> dict[str, Any]:
    try:
        pool.get_json(url, "/health", timeout_s=30.0)
        info = pool.get_json(url, info_path)
    except httpx.HTTPStatusError as exc:
        raise GenerationError(f"server at {url} is not ready: {exc.request.url.path} answered HTTP {exc.response.status_code}") from exc
    except (httpx.HTTPError, ValueError) as exc:
        raise GenerationError(f"server at {url} is unreachable: {type(exc).__name__}: {exc}") from exc
    if not isinstance(info, dict):
        raise GenerationError(f"server at {url} answered {info_path} with no object: {str(info)[:200]}")
    return info


def check_openai_server(pool: ServerPool, url: str) -> ServerInfo:
    """The same for an OpenAI-compatible server: /health, then the first model of /v1/models."""
    models = _health_then(pool, url, "/v1/models").get("data") or [{}]
    model = models[0].get("id") if isinstance(models[0], dict) else None
    return ServerInfo(url, model, None, None)


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)
