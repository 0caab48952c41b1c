"""Every setting of a run, stored with the run as `runs.config`.

Stage defaults (sampling, cleaning, evaluation) come from the stage cores themselves, so there is
one place where each default lives.
"""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from orchestrator.rewards import RewardWeights


def _sampling_defaults() -> dict[str, Any]:
    from workers.generation import SamplingParams

    return asdict(SamplingParams())


def _generation_defaults() -> dict[str, Any]:
    from workers.generation import GenerationSettings

    return asdict(GenerationSettings())


def _cleaning_defaults() -> dict[str, Any]:
    from workers.cleaning import CleaningSettings

    return asdict(CleaningSettings())


def _evaluation_defaults() -> dict[str, Any]:
    from workers.evaluation import EvalSettings

    return asdict(EvalSettings())


def server_urls(config: dict[str, Any]) -> list[str]:
    """The model servers of a run's config, stored or not: `urls`, or the one `url` of runs stored
    before several servers were possible."""
    if config.get("urls"):
        return list(config["urls"])
    return [config["url"]] if config.get("url") else []


class PromptBudget(BaseModel):
    # Qwen3-8B has 32,768 tokens of context; with 8,192 reserved for the answer, ~24k tokens remain
    # for the prompt. Code runs at roughly 3 characters a token.
    max_prompt_chars: int = Field(default=70_000, gt=1000)
    max_feedback_chars: int = Field(default=2_000, gt=100)


class RunConfig(BaseModel):
    model: str = "Qwen/Qwen3-8B"
    generator: Literal["sglang", "openai", "replay"] = "sglang"
    # The model servers (or one SGLang router); a trajectory's turns all go to the same one.
    urls: list[str] = Field(default_factory=list)
    # What each server said before the run started: url, model_path, weight_version.
    servers: list[dict[str, Any]] = Field(default_factory=list)
    replay_path: str | None = None
    enable_thinking: bool = False
    samples: int = Field(default=1, ge=1)
    max_turns: int = Field(default=3, ge=1)
    gamma: float = Field(default=0.4, ge=0.0, le=1.0)
    rewards: RewardWeights = Field(default_factory=RewardWeights)
    early_stop_reward: float | None = 1.3
    sampling: dict[str, Any] = Field(default_factory=_sampling_defaults)
    generation: dict[str, Any] = Field(default_factory=_generation_defaults)
    cleaning: dict[str, Any] = Field(default_factory=_cleaning_defaults)
    evaluation: dict[str, Any] = Field(default_factory=_evaluation_defaults)
    prompt: PromptBudget = Field(default_factory=PromptBudget)
    # Turn 0's prompt: kturn's own (the reference and the backend's instructions, the same opening
    # every later turn is built on), or "dataset": a slime/TritonForge line's own `prompt` where it
    # has one (kturn's otherwise); later turns add answers and feedback after it either way.
    first_prompt: Literal["kturn", "dataset"] = "kturn"

    @model_validator(mode="before")
    @classmethod
    def _legacy_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            data = {**data, "urls": server_urls(data)}
            del data["url"]
        return data

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.generator != "replay" and not self.urls:
            raise ValueError(f"the {self.generator} generator needs --url (the model server, e.g. http://127.0.0.1:30000)")
        if self.generator == "replay" and not self.replay_path:
            raise ValueError("the replay generator needs --replay FILE.jsonl")
        self.sampling_params()  # validates ranges now, not on a GPU host later
        self.generation_settings()
        self.evaluation_settings()
        return self

    @property
    def backend(self) -> str:
        return self.evaluation["backend"]

    def sampling_params(self):
        from workers.generation import SamplingParams

        return SamplingParams.from_dict(self.sampling)

    def generation_settings(self):
        from workers.generation import GenerationSettings

        return GenerationSettings.from_dict(self.generation)

    def cleaning_settings(self, finish_reason: dict[str, Any] | None = None):
        """The cleaner's thresholds; for an answer aborted for a loop, those of the abort, so the
        cleaner cuts the very loop the answer was aborted for."""
        from workers.cleaning import CleaningSettings

        loop_abort = self.generation_settings().loop_abort
        if (finish_reason or {}).get("type") == "loop" and loop_abort is not None:
            return loop_abort
        return CleaningSettings(**self.cleaning)

    def evaluation_settings(self):
        from workers.evaluation import EvalSettings

        known = {f.name for f in fields(EvalSettings)}
        unknown = set(self.evaluation) - known
        if unknown:
            raise ValueError(f"unknown evaluation settings: {sorted(unknown)}")
        return EvalSettings(**self.evaluation)


class StoredRunConfig(RunConfig):
    """A run's config as the stages read it back from the database: stored, so never changed
    again, and the settings they derive from it are made once per process, not per task (making
    them was a tenth of a stage's own CPU)."""

    _made: dict[Any, Any] = PrivateAttr(default_factory=dict)

    def _once(self, key: Any, make):
        made = (self.__pydantic_private__ or {}).get("_made")
        if made is None:  # while the validators run, before the private attributes exist
            return make()
        if key not in made:
            made[key] = make()
        return made[key]

    def sampling_params(self):
        return self._once("sampling", super().sampling_params)

    def generation_settings(self):
        return self._once("generation", super().generation_settings)

    def evaluation_settings(self):
        return self._once("evaluation", super().evaluation_settings)

    def cleaning_settings(self, finish_reason: dict[str, Any] | None = None):
        make = super().cleaning_settings
        return self._once(("cleaning", (finish_reason or {}).get("type") == "loop"), lambda: make(finish_reason))
