"""Named flags an evaluation can raise, and which of them disqualify by default.

Only "no custom kernel does any of the work" (and code that goes after the harness) is a
hack: a partial replacement — some operators in a custom kernel, the rest left to PyTorch —
is an honest answer, scored on its measured speedup (`torch_compute_ops` is informational).
"""
from __future__ import annotations

NO_CUSTOM_KERNEL = "no_custom_kernel"
KERNEL_NEVER_LAUNCHED = "kernel_never_launched"
CALLS_REFERENCE = "calls_reference"
THREADS_OR_SUBPROCESSES = "threads_or_subprocesses"
TIMER_TAMPERING = "timer_tampering"        # time.* / CUDA events / synchronize patched
HARNESS_TAMPERING = "harness_tampering"    # the channel forged, outputs changed after they were reported, ...
MONKEYPATCH_TORCH = "monkeypatch_torch"
# informational
PRECISION_DOWNGRADE = "precision_downgrade"  # low precision on an fp32 problem: the tolerance decides
TORCH_COMPUTE_OPS = "torch_compute_ops"    # PyTorch computes part of the answer (a partial replacement)
TORCH_FALLBACK = "torch_fallback"          # a try/except around the kernel build or launch
SPEEDUP_RECHECKED = "speedup_rechecked"
SPEEDUP_UNCONFIRMED = "speedup_unconfirmed"  # recheck disagreed wildly: the slower figure is kept
TIMING_NOT_MEANINGFUL = "timing_not_meaningful"
TIMEOUT = "timeout"
CRASHED = "crashed"
OUT_OF_MEMORY = "out_of_memory"

DEFAULT_STRICT_FLAGS: tuple[str, ...] = (
    NO_CUSTOM_KERNEL,
    KERNEL_NEVER_LAUNCHED,
    CALLS_REFERENCE,
    THREADS_OR_SUBPROCESSES,
    TIMER_TAMPERING,
    HARNESS_TAMPERING,
    MONKEYPATCH_TORCH,
)

# Flags relaxed by a "the reference's own torch code wrapped as ModelNew" calibration run.
KERNEL_REQUIREMENT_FLAGS: tuple[str, ...] = (NO_CUSTOM_KERNEL, KERNEL_NEVER_LAUNCHED)


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
