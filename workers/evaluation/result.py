"""Evaluation verdict types returned to the orchestrator."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Timing:
    """Per-call wall time. spread_ms is the interquartile range (p75 - p25) of the trials."""
    median_ms: float
    spread_ms: float
    trials: int


ERROR_KINDS = (
    None, "compile_error", "runtime_error", "incorrect", "timeout", "crashed",
    "disqualified", "invalid_solution",
    # additions: failures that are not the candidate's fault
    "reference_error", "harness_error",
)
# The error kinds that say nothing of the candidate: never scored, never fed back to the model.
NOT_THE_CANDIDATES_FAULT = ("harness_error", "reference_error")


@dataclass(frozen=True)
class EvalResult:
    compiled: bool
    correct: bool
    runtime: Timing | None
    baseline: Timing | None
    speedup: float | None
    speedup_spread: float | None
    timing_meaningful: bool
    flags: list[str]
    disqualified: bool
    error_kind: str | None
    error: str | None
    details: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "EvalResult":
        data = dict(data)
        for key in ("runtime", "baseline"):
            if data.get(key) is not None:
                data[key] = Timing(**data[key])
        return EvalResult(**data)
