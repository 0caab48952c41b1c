"""Sending rollout-buffer items to a slime buffer server (`POST /buffer/write`, one item per request),
with retries (tenacity) on connection errors and 5xx answers."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

WRITE_PATH = "/buffer/write"


class PushError(Exception):
    """The buffer server refused an item or stayed unreachable; the message says how far the push got."""


def write_url(url: str) -> str:
    return url if url.rstrip("/").endswith(WRITE_PATH) else url.rstrip("/") + WRITE_PATH


def _transient(error: BaseException) -> bool:
    return isinstance(error, httpx.TransportError) or (isinstance(error, httpx.HTTPStatusError) and error.response.status_code >= 500)


def push(items: Iterable[dict[str, Any]], url: str, attempts: int = 3, backoff_s: float = 0.5, timeout_s: float = 30.0) -> int:
    """POST every item in order; returns how many were accepted. Stops at the first item the server
    will not take, raising PushError."""
    target = write_url(url)

    @retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=backoff_s), reraise=True)
    def send(client: httpx.Client, item: dict[str, Any]) -> None:
        client.post(target, json=item).raise_for_status()

    sent = 0
    with httpx.Client(timeout=timeout_s) as client:
        for item in items:
            try:
                send(client, item)
            except httpx.HTTPStatusError as error:
                raise PushError(f"{target} refused item {item.get('uid')} ({error.response.status_code}: {error.response.text[:200]}); {sent} item(s) pushed before it") from None
            except httpx.TransportError as error:
                raise PushError(f"{target} unreachable after {attempts} tries ({type(error).__name__}: {error}); {sent} item(s) pushed before it") from None
            sent += 1
    return sent
