"""Generation side of kturn: one LLM answer per turn, from SGLang, an OpenAI-compatible server, or a
replay file.

A pure core: no Celery, no database. Workers build a backend with
`make_backend(...)` and call `backend.generate(GenerationRequest(...), abort)`.
"""

from workers.generation.abort import AbortSignal
from workers.generation.backend import GenerationBackend, GenerationError, make_backend
from workers.generation.chat_template import render_chatml
from workers.generation.replay import ReplayBackend
from workers.generation.request import (
    DEFAULT_STOP,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    LoopAbort,
    SamplingParams,
)
from workers.generation.openai_compat import OpenAIBackend
from workers.generation.servers import ServerInfo, ServerPool
from workers.generation.settings import LOOP_ABORT_SETTINGS, GenerationSettings
from workers.generation.sglang import SGLangBackend

__all__ = [
    "AbortSignal",
    "DEFAULT_STOP",
    "FinishReason",
    "GenerationBackend",
    "GenerationError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationSettings",
    "LOOP_ABORT_SETTINGS",
    "LoopAbort",
    "OpenAIBackend",
    "ReplayBackend",
    "SGLangBackend",
    "SamplingParams",
    "ServerInfo",
    "ServerPool",
    "make_backend",
    "render_chatml",
]
