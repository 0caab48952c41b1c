"""Named flags an evaluation can raise, and which of them disqualify by default."""
from __future__ import annotations

NO_CUSTOM_KERNEL = "no_custom_kernel"
KERNEL_NEVER_LAUNCHED = "kernel_never_launched"
TORCH_FALLBACK = "torch_fallback"
CALLS_REFERENCE = "calls_reference"
TORCH_COMPUTE_OPS = "torch_compute_ops"
THREADS_OR_SUBPROCESSES = "threads_or_subprocesses"
TIMER_TAMPERING = "timer_tampering"        # time.* / CUDA events / synchronize patched
HARNESS_TAMPERING = "harness_tampering"    # sys.modules, builtins, gc, inspect, frames, raw fds
MONKEYPATCH_TORCH = "monkeypatch_torch"
CACHED_RESULTS = "cached_results"
UNINITIALISED_OUTPUT = "uninitialised_output"
PRECISION_DOWNGRADE = "precision_downgrade"
INPUT_MUTATION = "input_mutation"
OUTPUT_ALIASES_INPUT = "output_aliases_input"
# informational
SPEEDUP_RECHECKED = "speedup_rechecked"
SPEEDUP_UNCONFIRMED = "speedup_unconfirmed"  # recheck disagreed wildly: the slower figure is kept
TIMING_NOT_MEANINGFUL = "timing_not_meaningful"
TIMEOUT = "timeout"
CRASHED = "crashed"
OUT_OF_MEMORY = "out_of_memory"

DEFAULT_STRICT_FLAGS: tuple[str, ...] = (
    NO_CUSTOM_KERNEL,
    KERNEL_NEVER_LAUNCHED,
    TORCH_FALLBACK,
    CALLS_REFERENCE,
    TORCH_COMPUTE_OPS,
    THREADS_OR_SUBPROCESSES,
    TIMER_TAMPERING,
    HARNESS_TAMPERING,
    MONKEYPATCH_TORCH,
    CACHED_RESULTS,
    UNINITIALISED_OUTPUT,
    PRECISION_DOWNGRADE,
    INPUT_MUTATION,
    OUTPUT_ALIASES_INPUT,
)

# Flags relaxed by a "the reference's own torch code wrapped as ModelNew" calibration run.
KERNEL_REQUIREMENT_FLAGS: tuple[str, ...] = (NO_CUSTOM_KERNEL, KERNEL_NEVER_LAUNCHED, TORCH_COMPUTE_OPS)


class FlagSet:
    """Ordered flags with the reasons each one fired (reasons feed the model-facing feedback)."""

    def __init__(self) -> None:
        self._reasons: dict[str, list[str]] = {}

    def add(self, flag: str, reason: str) -> None:
        reasons = self._reasons.setdefault(flag, [])
        if reason not in reasons and len(reasons) < 8:
            reasons.append(reason[:300])

    def merge(self, other: "FlagSet") -> None:
        for flag, reasons in other._reasons.items():
            for reason in reasons:
                self.add(flag, reason)

    def __contains__(self, flag: str) -> bool:
        return flag in self._reasons

    def names(self) -> list[str]:
        return list(self._reasons)

    def reasons(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._reasons.items()}

    def strict(self, strict_flags) -> list[str]:
        return [f for f in self._reasons if f in strict_flags]
