"""Timing: identical procedure for reference and candidate (both children call measure()),
and the statistics the parent derives from the raw per-trial times.

CPU: time.perf_counter_ns around each call, threads fixed by torch.set_num_threads.
GPU: the L2 cache is flushed (a 256 MB buffer is written) before each trial, then
  start.record(); fn(); torch.cuda.synchronize(); end.record(); end.synchronize()
  — the device-wide synchronize makes work the candidate queued on side streams count.
Every trial gets its own freshly cloned inputs, prepared before the timed loop.
measure() binds the timer (and the CUDA API) to locals on entry: candidate code runs in
this interpreter, and rebinding this module's globals mid-run must not change the figures.
"""
from __future__ import annotations

import math
import statistics
import time

from .result import Timing

_perf_counter_ns = time.perf_counter_ns  # bound before any candidate code can patch time
_cuda_api: tuple | None = None


def bind_device_api() -> None:
    """Capture torch.cuda.synchronize / Event before the candidate is imported (it may patch them)."""
    global _cuda_api
    import torch
    _cuda_api = (torch.cuda.synchronize, torch.cuda.Event)


def input_set_count(warmup: int, trials: int, set_bytes: int, budget_mb: int) -> int:
    """How many distinct input sets to generate: one per call when the budget allows."""
    wanted = warmup + trials
    if set_bytes <= 0:
        return wanted
    return max(1, min(wanted, (budget_mb << 20) // set_bytes))


def prepare_calls(input_sets: list, count: int, device: str) -> list[tuple]:
    """count argument tuples with distinct tensor storage (so no call sees another's buffers).

    On CPU each call's contiguous tensors start at a different 64-byte offset within a
    page: a process's heap layout otherwise fixes the input/output address alignment for
    every trial, and 4K-aliasing stalls then bias one process's median by ~5%."""
    import torch

    def fresh(value, call: int):
        if not isinstance(value, torch.Tensor):
            return value
        if device != "cpu" or not value.is_contiguous() or value.numel() == 0:
            return value.to(device=device, copy=True)
        shift = ((call * 64) % 4096) // value.element_size()
        storage = torch.empty(value.numel() + shift, dtype=value.dtype)
        view = storage[shift:].view(value.shape)
        view.copy_(value)
        return view
    return [tuple(fresh(v, i) for v in input_sets[i % len(input_sets)]) for i in range(count)]


def measure(fn, calls: list[tuple], warmup: int, trials: int, device: str, l2_flush_mb: int = 256,
            after_call=None) -> list[float]:
    """Per-trial milliseconds of fn(*calls[i]) for the trials after the warm-ups.

    after_call(), when given, runs after every call (warm-ups included) outside the timed
    region: the candidate child counts kernel launches per call with it."""
    # Everything the timed loop needs is bound to locals before the first candidate call:
    # a candidate that rebinds this module's globals mid-run (frame walking) then changes
    # nothing that is measured, and timer_guard still reports the rebinding.
    clock, cuda_api, measure_cuda = _perf_counter_ns, _cuda_api, _measure_cuda
    after = after_call or _nothing
    for args in calls[:warmup]:
        fn(*args)
        after()
    timed = calls[warmup:warmup + trials]
    if device == "cuda":
        return measure_cuda(fn, timed, l2_flush_mb, cuda_api, after)
    times = []
    for args in timed:
        start = clock()
        fn(*args)
        times.append((clock() - start) / 1e6)
        after()
    return times


def _nothing() -> None:
    return None


def _measure_cuda(fn, calls: list[tuple], l2_flush_mb: int, cuda_api: tuple | None, after) -> list[float]:
    import torch
    if cuda_api is None:
        bind_device_api()
        cuda_api = _cuda_api
    synchronize, Event = cuda_api
    flush = torch.empty(max(1, l2_flush_mb << 20) // 4, dtype=torch.int32, device="cuda")
    times = []
    for args in calls:
        flush.zero_()
        synchronize()
        start, end = Event(enable_timing=True), Event(enable_timing=True)
        start.record()
        fn(*args)
        synchronize()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        after()
    del flush
    return times


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
