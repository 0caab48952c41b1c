"""The interface every generation backend implements, and the factory that picks one."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workers.generation.request import GenerationRequest, GenerationResult

BACKEND_NAMES = ("replay", "sglang")


class GenerationError(Exception):
    """The backend could not produce an answer: server down or answering garbage
    after retries, a request it rejected, or (replay) no recorded answer."""


@runtime_checkable
class GenerationBackend(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> GenerationResult: ...


def make_backend(
    name: str,
    *,
    url: str | None = None,
    model: str | None = None,
    replay_path: str | None = None,
    timeout_s: float = 1800.0,
    retries: int = 5,
    backoff_s: float = 1.0,
) -> GenerationBackend:
    """Build the backend called `name` ("sglang" needs `url`, "replay" needs `replay_path`)."""
    # Imported here because both modules import GenerationError from this one.
    if name == "sglang":
        from workers.generation.sglang import SGLangBackend

        if not url:
            raise ValueError("generation backend 'sglang' needs url (e.g. http://127.0.0.1:30000)")
        return SGLangBackend(url, model=model, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
    if name == "replay":
        from workers.generation.replay import ReplayBackend

        if not replay_path:
            raise ValueError("generation backend 'replay' needs replay_path (a JSONL file)")
        return ReplayBackend(replay_path)
    raise ValueError(f"unknown generation backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}")
