"""Timing on the parent's clock.

A batch is one request: the child generates the inputs of R calls from seeds revealed in the
request, calls forward() on each, synchronises the device and checksums every output; the
parent measures from sending the request to receiving the answer. Both children run the
identical procedure on the same seeds, so everything in the window but forward() itself —
the message round trip, input generation, synchronisation, checksums — costs both the same.
The reference child (trusted: it runs the problem's own code) reports how long its forward()
calls took; the rest of its window is that shared overhead. The reference's timed batches run
alone, after the candidate's process tree is dead, so that nothing the candidate left running
(threads, queued GPU work) can slow the reference and inflate a speedup.

The candidate's process reports its forward() time too, measured by the same code, and that
figure is used only as a refinement inside the parent's bound: it is never taken below the
candidate's own window minus the reference's overhead (less a tolerance for the noise of
two processes' overheads), nor above the window. A candidate that reports less than it spent
gains at most that tolerance. It cannot stop the parent's clock early (its answer must carry
checksums of outputs computed from inputs it only got with the request), nor finish its work
after the clock stops (the stored bytes must match those checksums).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .result import Timing

# how far below the parent's bound a candidate's own figure is still believed: a share of the
# shared overhead, plus a constant (scheduling noise of two processes and the parent)
TOLERANCE_SHARE = 0.1
TOLERANCE_S = 5e-4


@dataclass(frozen=True)
class BatchTimes:
    calls: int
    reference_window_s: float
    reference_forward_s: float
    candidate_window_s: float
    candidate_forward_s: float  # the candidate's own account: believed only within the bound

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.reference_window_s - self.reference_forward_s)

    def reference_ms(self) -> float:
        return self.reference_forward_s / self.calls * 1e3

    def candidate_bound_s(self, overhead_s: float) -> float:
        """The least the candidate can have spent on its calls, on the parent's clock."""
        return max(0.0, self.candidate_window_s - overhead_s - (TOLERANCE_SHARE * overhead_s + TOLERANCE_S))

    def candidate_ms(self, overhead_s: float) -> float:
        own = min(max(self.candidate_forward_s, self.candidate_bound_s(overhead_s)), self.candidate_window_s)
        return own / self.calls * 1e3

    def clamped(self, overhead_s: float) -> bool:
        return self.candidate_forward_s < self.candidate_bound_s(overhead_s)


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
