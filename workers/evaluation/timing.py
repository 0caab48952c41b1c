"""Timing on the parent's clock.

A batch is one request: the child takes the inputs of R calls (on the CPU, from its arena,
filled by the parent just before; generated on the GPU from seeds revealed in it), calls
forward() on each, synchronises the device and answers (on the GPU, with checksums of every
output); the parent measures from sending the request to receiving the answer. The candidate's process says nothing about time
that is used: everything in its window is charged to it.

The reference child (trusted: it runs the problem's own code) reports where its window went;
what it spent outside forward() and the output step — the round trip and taking the inputs,
work no candidate can skip — is the credit, taken off both windows. The output step (the GPU's
checksums) is charged to both: a candidate that fused it into its kernel would save at most
that. The reference's timed batches run alone, after the candidate's process tree is dead, so
that nothing the candidate left running (threads, queued GPU work) can slow the reference and
inflate a speedup. Since the credit is the reference's, both timed batches start from the same
state (on the CPU: the child frozen since its last answer, which it gave only after dropping its
inputs, its inputs just copied into its arena, thawed by the request; each frees its previous
batch's outputs inside the window, alike).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .result import Timing

# a candidate's time is never taken below this share of its own window (noise, not speed)
FLOOR_SHARE = 0.05


@dataclass(frozen=True)
class BatchTimes:
    calls: int
    reference_window_s: float
    credit_s: float  # the reference's round trip and inputs (trusted), taken off both windows
    candidate_window_s: float

    def reference_ms(self) -> float:
        return (self.reference_window_s - self.credit_s) / self.calls * 1e3

    def candidate_ms(self) -> float:
        own = max(self.candidate_window_s - self.credit_s, FLOOR_SHARE * self.candidate_window_s)
        return own / self.calls * 1e3


def calls_for(per_call_s: float, target_ms: float, max_calls: int, call_bytes: int, memory_mb: int) -> int:
    """Calls per batch: enough for the batch to last about target_ms, within the memory budget."""
    wanted = math.ceil(target_ms / 1e3 / max(per_call_s, 1e-7))
    by_memory = (memory_mb << 20) // call_bytes if call_bytes > 0 else max_calls
    return max(1, min(wanted, max_calls, by_memory))


def summarise(times_ms: list[float]) -> Timing:
    """Median and interquartile range (p75 - p25, inclusive method)."""
    if len(times_ms) == 1:
        return Timing(median_ms=times_ms[0], spread_ms=0.0, trials=1)
    q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    return Timing(median_ms=statistics.median(times_ms), spread_ms=q3 - q1, trials=len(times_ms))


def speedup(baseline: Timing, runtime: Timing) -> tuple[float, float]:
    """baseline median / runtime median, and its spread by first-order propagation of the
    relative IQRs: s * sqrt((iqr_b/med_b)^2 + (iqr_r/med_r)^2)."""
    value = baseline.median_ms / runtime.median_ms
    relative = math.hypot(baseline.spread_ms / baseline.median_ms, runtime.spread_ms / runtime.median_ms)
    return value, value * relative
