"""What a generation backend is asked for and what it answers.

Plain frozen dataclasses so requests and results can be logged, stored and
passed through Celery (via ``dataclasses.asdict`` / ``SamplingParams.from_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Stop strings that end a kernel answer early. A second fence opening right
# after a closing one means the model started a new (usually duplicated)
# code block; four newlines in a row mean it drifted into padding/looping.
DEFAULT_STOP: tuple[str, ...] = ("```\n```", "```python\n```python", "\n\n\n\n")


def from_dict(cls, d: dict[str, Any]):
    """Inverse of ``dataclasses.asdict`` for a settings dataclass; missing keys take the defaults."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**d)


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    # Written as "inside" rather than "outside" so NaN is refused too.
    inside = (low < value if low_open else low <= value) and value <= high
    if not inside:
        bracket = "(" if low_open else "["
        raise ValueError(f"SamplingParams.{name} must be in {bracket}{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings for one generation, defaults tuned for Qwen3-8B kernel writing."""

    # SGLang's own default is 128 tokens, which silently truncates kernels:
    # to_sglang() therefore always sends this value.
    max_new_tokens: int = 8192
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    min_p: float = 0.0
    repetition_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = DEFAULT_STOP
    seed: int | None = None  # sent as SGLang's `sampling_seed`

    def __post_init__(self) -> None:
        # Accept a list (JSON round trip) or a single string (SGLang accepts both);
        # store a tuple so the dataclass stays immutable and hashable.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        self._validate()

    def _validate(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        # Qwen3 must never be sampled greedily (it loops endlessly), so 0 is refused too.
        if not self.temperature > 0:
            raise ValueError(f"SamplingParams.temperature must be > 0 (greedy decoding makes Qwen3 loop), got {self.temperature!r}")
        _check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        if self.top_k != -1 and self.top_k < 1:
            raise ValueError(f"SamplingParams.top_k must be -1 (disabled) or >= 1, got {self.top_k!r}")
        _check_range("min_p", self.min_p, 0.0, 1.0)
        _check_range("repetition_penalty", self.repetition_penalty, 0.0, 2.0, low_open=True)
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        for s in self.stop:
            # An empty stop string would match before the first token.
            if not isinstance(s, str) or not s:
                raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")

    def to_sglang(self) -> dict[str, Any]:
        """The `sampling_params` object of SGLang's native /generate API."""
        params: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "stop": list(self.stop),
        }
        if self.seed is not None:
            params["sampling_seed"] = self.seed
        return params

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingParams:
        return from_dict(cls, d)


@dataclass(frozen=True)
class GenerationRequest:
    """One turn of one sample: the conversation so far and how to sample the answer."""

    rid: str  # our own id (turn-based), sent to SGLang so the request can be aborted by name
    messages: list[dict[str, str]]  # OpenAI-style [{"role": ..., "content": ...}]
    sampling: SamplingParams
    enable_thinking: bool = False
    problem_key: str = ""  # e.g. "level1/1_ReLU"; the replay backend looks answers up by it
    sample_index: int = 0
    turn_index: int = 0
    # Requests with the same key go to the same server (of several), so a trajectory's later turns
    # find their prefix in that server's cache. Empty: the rid decides.
    affinity_key: str = ""


class FinishReason(StrEnum):
    """The `type` of SGLang's finish_reason object."""

    STOP = "stop"  # matched a stop string or an end token (see `matched`)
    LENGTH = "length"  # hit max_new_tokens: the answer is truncated
    ABORT = "abort"  # aborted via /abort_request (or by the server); kturn adds "reason": "cancelled"
    LOOP = "loop"  # kturn aborted it: the streamed answer had fallen into a loop (see GenerationResult.loop)

    @classmethod
    def of(cls, finish_reason: dict[str, Any]) -> FinishReason:
        return cls(finish_reason["type"])


@dataclass(frozen=True)
class LoopAbort:
    """Where a streamed answer began to loop, and how much was decoded after that before it ended."""

    onset_char: int  # offset in the answer text where the first repeated unit begins
    period: int  # length of the repeated unit, in characters
    detected_at_char: int  # how much text had arrived when the loop was certain
    chars_after_onset: int  # of the stored text
    tokens_after_onset: int | None  # output tokens decoded from the onset on (None when the server gave no counts)


@dataclass(frozen=True)
class GenerationResult:
    """A backend's answer to one GenerationRequest."""

    text: str
    # SGLang's object, kept exactly as received so nothing is lost for provenance:
    # {"type": "stop", "matched": "```\n```" | 151645}, {"type": "length", "length": N}, {"type": "abort", ...}
    finish_reason: dict[str, Any]
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    output_ids: list[int] | None
    latency_s: float  # wall-clock time of generate(), retries included
    backend: str  # "sglang" | "replay"
    prompt_text: str | None  # the exact rendered prompt sent (sglang), None when nothing was sent
    # Token-level truth (when the run records tokens): the prompt ids sent (input_ids mode) and the
    # output ids with their logprobs, one per output token.
    prompt_token_ids: list[int] | None = None
    output_logprobs: list[float] | None = None
    loop: LoopAbort | None = None  # set when kturn aborted the answer for a loop
    server_url: str | None = None  # which server answered
    weight_version: str | None = None  # of the weights that answered, as the server reports it

    @property
    def finish_type(self) -> FinishReason:
        return FinishReason.of(self.finish_reason)

    @property
    def matched_stop(self) -> str | int | None:
        """The stop string or end-token id that ended generation, if any."""
        return self.finish_reason.get("matched")

    @property
    def truncated(self) -> bool:
        return self.finish_type is FinishReason.LENGTH
