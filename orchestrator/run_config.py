"""Every setting of a run, stored with the run as `runs.config`.

Stage defaults (sampling, cleaning, evaluation) come from the stage cores themselves, so there is
one place where each default lives.
"""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from orchestrator.rewards import RewardWeights


def _sampling_defaults() -> dict[str, Any]:
    from workers.generation import SamplingParams

    return asdict(SamplingParams())


def _cleaning_defaults() -> dict[str, Any]:
    from workers.cleaning import CleaningSettings

    return asdict(CleaningSettings())


def _evaluation_defaults() -> dict[str, Any]:
    from workers.evaluation import EvalSettings

    return asdict(EvalSettings())


class PromptBudget(BaseModel):
    # Qwen3-8B has 32,768 tokens of context; with 8,192 reserved for the answer, ~24k tokens remain
    # for the prompt. Code runs at roughly 3 characters a token.
    max_prompt_chars: int = Field(default=70_000, gt=1000)
    max_feedback_chars: int = Field(default=2_000, gt=100)


class RunConfig(BaseModel):
    model: str = "Qwen/Qwen3-8B"
    generator: Literal["sglang", "replay"] = "sglang"
    url: str | None = None
    replay_path: str | None = None
    enable_thinking: bool = False
    samples: int = Field(default=1, ge=1)
    max_turns: int = Field(default=3, ge=1)
    gamma: float = Field(default=0.4, ge=0.0, le=1.0)
    rewards: RewardWeights = Field(default_factory=RewardWeights)
    early_stop_reward: float | None = 1.3
    sampling: dict[str, Any] = Field(default_factory=_sampling_defaults)
    cleaning: dict[str, Any] = Field(default_factory=_cleaning_defaults)
    evaluation: dict[str, Any] = Field(default_factory=_evaluation_defaults)
    prompt: PromptBudget = Field(default_factory=PromptBudget)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.generator == "sglang" and not self.url:
            raise ValueError("the sglang generator needs --url (the SGLang server, e.g. http://127.0.0.1:30000)")
        if self.generator == "replay" and not self.replay_path:
            raise ValueError("the replay generator needs --replay FILE.jsonl")
        self.sampling_params()  # validates ranges now, not on a GPU host later
        self.evaluation_settings()
        return self

    @property
    def backend(self) -> str:
        return self.evaluation["backend"]

    def sampling_params(self):
        from workers.generation import SamplingParams

        return SamplingParams.from_dict(self.sampling)

    def cleaning_settings(self):
        from workers.cleaning import CleaningSettings

        return CleaningSettings(**self.cleaning)

    def evaluation_settings(self):
        from workers.evaluation import EvalSettings

        known = {f.name for f in fields(EvalSettings)}
        unknown = set(self.evaluation) - known
        if unknown:
            raise ValueError(f"unknown evaluation settings: {sorted(unknown)}")
        return EvalSettings(**self.evaluation)
