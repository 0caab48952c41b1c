"""The interface every generation backend implements, and the factory that picks one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from workers.generation.request import GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from workers.generation.abort import AbortSignal

BACKEND_NAMES = ("replay", "sglang", "openai")
SERVER_BACKENDS = ("sglang", "openai")


class GenerationError(Exception):
    """The backend could not produce an answer: server down or answering garbage
    after retries, a request it rejected, or (replay) no recorded answer."""


@runtime_checkable
class GenerationBackend(Protocol):
    name: str

    def generate(self, request: GenerationRequest, abort: AbortSignal | None = None) -> GenerationResult: ...


def make_backend(
    name: str,
    *,
    url: str | Sequence[str] | None = None,
    model: str | None = None,
    replay_path: str | None = None,
    **options: Any,
) -> GenerationBackend:
    """Build the backend called `name`: "sglang" and "openai" need `url` (one or several servers; the
    other options go to the backend: settings, pool, or the pool's own timeout_s, retries, backoff_s),
    "replay" needs `replay_path`."""
    # Imported here because the backend modules import GenerationError from this one.
    if name in SERVER_BACKENDS:
        from workers.generation.openai_compat import OpenAIBackend
        from workers.generation.sglang import SGLangBackend

        if not url:
            raise ValueError(f"generation backend {name!r} needs url (e.g. http://127.0.0.1:30000)")
        backend = SGLangBackend if name == "sglang" else OpenAIBackend
        return backend(url, model=model, **options)
    if name == "replay":
        from workers.generation.replay import ReplayBackend

        if not replay_path:
            raise ValueError("generation backend 'replay' needs replay_path (a JSONL file)")
        return ReplayBackend(replay_path)
    raise ValueError(f"unknown generation backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}")
