"""Generation side of kturn: one LLM answer per turn, from SGLang or from a replay file.

A pure core: no Celery, no database. Workers build a backend with
`make_backend(...)` and call `backend.generate(GenerationRequest(...))`.
"""

from workers.generation.backend import GenerationBackend, GenerationError, make_backend
from workers.generation.chat_template import render_chatml
from workers.generation.replay import ReplayBackend
from workers.generation.request import (
    DEFAULT_STOP,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from workers.generation.sglang import SGLangBackend

__all__ = [
    "DEFAULT_STOP",
    "FinishReason",
    "GenerationBackend",
    "GenerationError",
    "GenerationRequest",
    "GenerationResult",
    "ReplayBackend",
    "SGLangBackend",
    "SamplingParams",
    "make_backend",
    "render_chatml",
]
