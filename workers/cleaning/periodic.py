"""Exact repetition: find runs where a unit of <= max_period chars repeats back to back.

Plain string scanning, no regex. Probes sit every `probe_step()` chars at fixed
absolute offsets (multiples of the step, so the batch and the streaming
detector probe the same places). A probe takes the `gram_chars` chars before it
and looks for the nearest earlier copy within max_period: the distance is a
candidate period p. The candidate is verified by comparing the text with itself
shifted by p, growing the compared span geometrically (C-speed slice compares)
in both directions, which yields the maximal p-periodic run around the probe.

Cost: one bounded rfind per probe plus verification proportional to the run
found, so O(n * max_period / probe step) C-level work on normal text and
O(n log n) on a text that is one long loop (the scan jumps past it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .settings import CleaningSettings

_MIN_COMPARE = 32  # smallest span compared at once; below this slicing overhead dominates
# Largest span compared at once: slices are copies, and multi-megabyte copies
# go through fresh pages (mmap), which made a 4 MB loop cost 7x a 1 MB one.
_MAX_COMPARE = 1 << 16


@dataclass(frozen=True)
class PeriodicRun:
    """text[start:end] has period `period`: text[x] == text[x + period] for start <= x < end - period."""

    start: int
    end: int
    period: int

    @property
    def length(self) -> int:
        return self.end - self.start


def first_mismatch_forward(text: str, x: int, p: int, limit: int) -> int:
    """Smallest e >= x with text[e] != text[e + p], or limit - p if none before the limit."""
    last = limit - p
    lo = x
    step = max(p, _MIN_COMPARE)
    while lo < last:
        hi = min(lo + step, last)
        if text[lo:hi] == text[lo + p:hi + p]:
            lo = hi
            step = min(step << 1, _MAX_COMPARE)
            continue
        while hi - lo > 1:  # the mismatch lies in [lo, hi)
            mid = (lo + hi) >> 1
            if text[lo:mid] == text[lo + p:mid + p]:
                lo = mid
            else:
                hi = mid
        return lo
    return lo


def periodic_since(text: str, x: int, p: int, lower: int) -> int:
    """Smallest a >= lower with text[a:x] == text[a + p:x + p]."""
    hi = x
    step = max(p, _MIN_COMPARE)
    while hi > lower:
        lo = max(hi - step, lower)
        if text[lo:hi] == text[lo + p:hi + p]:
            hi = lo
            step = min(step << 1, _MAX_COMPARE)
            continue
        while hi - lo > 1:  # text[hi:x] matches; the last mismatch lies in [lo, hi)
            mid = (lo + hi) >> 1
            if text[mid:hi] == text[mid + p:hi + p]:
                hi = mid
            else:
                lo = mid
        return hi
    return hi


def probe(
    text: str,
    anchor: int,
    lower: int,
    upper: int,
    settings: CleaningSettings,
    accept: Callable[[PeriodicRun], bool] | None = None,
    open_runs: list[PeriodicRun] | None = None,
) -> PeriodicRun | None:
    """A loop (by the settings) through the gram ending at `anchor`, within text[lower:upper].

    Only text before `upper` is looked at, so the streaming detector can probe
    while the loop is still growing and probe again later. `accept` replaces
    the settings' loop test (used to explain a line loop by an exact period).
    Verified runs that are not loops yet but reach `upper` are appended to
    `open_runs`: the streaming detector follows them as text arrives.
    """
    is_wanted = accept or (lambda run: settings.is_loop(run.period, run.length))
    k = settings.gram_chars
    gram_start = anchor - k
    if gram_start < lower:
        return None
    gram = text[gram_start:anchor]
    window_start = max(lower, gram_start - settings.max_period)
    # rfind returns the nearest earlier copy first, i.e. the smallest shift, so
    # the first verified candidate has the primitive period of its run.
    pos = text.rfind(gram, window_start, anchor - 1)
    tries = 0
    verified: list[PeriodicRun] = []
    while pos >= 0 and tries < settings.max_candidates_per_probe:
        tries += 1
        p = gram_start - pos
        if not _is_multiple_of_verified(p, pos, verified) and (
            accept is not None or not _too_short_to_be_loop(text, pos, p, lower, upper, settings)
        ):
            start = periodic_since(text, pos, p, lower)
            stop = first_mismatch_forward(text, pos + k, p, upper)
            run = PeriodicRun(start, stop + p, p)
            if is_wanted(run):
                return run
            if open_runs is not None and run.end == upper:
                open_runs.append(run)
            verified.append(run)
        pos = text.rfind(gram, window_start, pos + k - 1)
    return None


def _is_multiple_of_verified(p: int, pos: int, verified: list[PeriodicRun]) -> bool:
    """A shift that is a multiple of a period already verified over the same stretch is that run again.

    Judging it as a run of the longer unit would let a loop qualify early by the
    long-unit threshold (8 x 152 chars instead of 20 x 76).
    """
    return any(p % run.period == 0 and run.start <= pos for run in verified)


def _too_short_to_be_loop(
    text: str, pos: int, p: int, lower: int, upper: int, settings: CleaningSettings
) -> bool:
    """Cheap rejection of a coincidental gram match (most candidates in normal text).

    If the text is not p-periodic for one step on either side of the matched
    gram, the run is shorter than p + gram + 2 steps, which is below the
    shortest loop for any p, so the binary searches can be skipped.
    """
    step = max(p, _MIN_COMPARE)
    if 2 * step + p + settings.gram_chars >= settings.min_loop_chars(p):
        return False  # the shortcut would not be sound with these settings
    back = max(pos - step, lower)
    if back < pos and text[back:pos] == text[back + p:pos + p]:
        return False
    ahead = pos + settings.gram_chars
    ahead_end = min(ahead + step, upper - p)
    return not (ahead < ahead_end and text[ahead:ahead_end] == text[ahead + p:ahead_end + p])


def first_anchor(lower: int, settings: CleaningSettings) -> int:
    """First probe offset at or after lower + gram_chars, aligned to scan_step."""
    step = settings.probe_step()
    first = lower + settings.gram_chars
    return -(-first // step) * step


def find_first_periodic_loop(
    text: str, lower: int, upper: int, settings: CleaningSettings, last_probe: int | None = None
) -> PeriodicRun | None:
    """First exact loop in text[lower:upper] (in probe order), or None.

    Probes stop at `last_probe` (default upper); runs are still verified up to upper.
    """
    run, _ = scan_probes(text, lower, upper, settings, first_anchor(lower, settings), last_probe)
    return run


def scan_probes(
    text: str, lower: int, upper: int, settings: CleaningSettings, anchor: int, last_probe: int | None = None
) -> tuple[PeriodicRun | None, int]:
    """Probe from `anchor` on, up to last_probe; returns (first loop, next anchor to probe)."""
    step = settings.probe_step()
    last = upper if last_probe is None else min(upper, last_probe)
    while anchor <= last:
        run = probe(text, anchor, lower, upper, settings)
        anchor += step
        if run is not None:
            return run, anchor
    return None, anchor
