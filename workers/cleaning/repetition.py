"""Loop detection: combine the exact (char-level) and approximate (line-level) scans.

The loop that matters is the earliest: everything from its second unit on is
cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from .line_runs import LineRun, LineScan
from .periodic import PeriodicRun, first_anchor, probe, scan_probes
from .settings import CleaningSettings
from .truncation import align_unit_start

DEFAULT_SETTINGS = CleaningSettings()
_BLOCK_CHARS = 1 << 16


@dataclass(frozen=True)
class LoopDetection:
    """A loop in a text: its first whole unit starts at `start` (offset in that text)."""

    start: int
    period: int
    repeats: int
    severity: float


@dataclass(frozen=True)
class Repetition:
    """A detected loop with everything the cleaner needs about it."""

    start: int  # first whole unit (aligned to a line / sentence / word start)
    period: int
    end: int  # end of the repeating stretch (as far as it was seen)
    kind: str  # "exact", "echo" (line loop with variations) or "junk" (junk-line flood)

    @property
    def repeats(self) -> int:
        return (self.end - self.start) // self.period

    @property
    def length(self) -> int:
        return self.end - self.start

    def covered(self, total_chars: int) -> float:
        return min(1.0, self.length / total_chars) if total_chars else 0.0

    def detection(self, total_chars: int, settings: CleaningSettings) -> LoopDetection:
        severity = settings.severity(self.covered(total_chars), self.repeats)
        return LoopDetection(self.start, self.period, self.repeats, severity)


def from_periodic_run(text: str, run: PeriodicRun) -> Repetition:
    start = align_unit_start(text, run.start, run.period, run.end)
    return Repetition(start, run.period, run.end, "exact")


def from_line_run(run: LineRun) -> Repetition:
    return Repetition(run.start, run.period, run.end, run.kind)


def explain_line_run(text: str, run: LineRun, lower: int, upper: int, settings: CleaningSettings) -> Repetition:
    """Report a line loop by its exact period when one explains it.

    The line scan can flag an exactly periodic loop before the exact scan has
    seen enough repeats (units of several lines), and its start is only the
    earlier copy of the first repeated line. When the text is periodic from
    the line loop's first unit up to a probe near its end, that period and its
    aligned start are the better description, and batch and streaming agree on it.
    """
    anchor = min(run.end, upper)
    if anchor - settings.gram_chars >= run.unit_end:
        def explains(periodic: PeriodicRun) -> bool:
            return periodic.start <= run.start + run.period and periodic.length >= 2 * periodic.period

        periodic = probe(text, anchor, lower, upper, settings, accept=explains)
        if periodic is not None:
            return from_periodic_run(text, periodic)
    return from_line_run(run)


def find_loop(
    text: str, lower: int = 0, upper: int | None = None, settings: CleaningSettings = DEFAULT_SETTINGS
) -> Repetition | None:
    """Earliest loop in text[lower:upper]; offsets are in `text`.

    Order matters for speed: both scans advance a block at a time and stop at
    their first loop; after a line loop the exact scan only probes as far as an
    exact loop starting before it would have been decided; a line loop is
    followed to its end only when no exact period explains it (an exact
    loop's end is found by galloping, in C).
    """
    upper = len(text) if upper is None else upper
    line_scan = LineScan(text, lower, upper, settings)
    anchor = first_anchor(lower, settings)
    exact_run = line_run = None
    # Both scans advance block by block, so neither reads far past the first loop.
    while exact_run is None and line_run is None and line_scan.position < upper:
        line_run = line_scan.find(until=line_scan.position + _BLOCK_CHARS)
        last_probe = line_scan.position
        if line_run is not None:
            # An exact loop starting before the line loop is decided within this distance.
            last_probe = line_run.end + settings.longest_undecided_run() + settings.max_period \
                + settings.probe_step() + settings.gram_chars
        exact_run, anchor = scan_probes(text, lower, upper, settings, anchor, last_probe)
    if exact_run is None and line_run is None:
        exact_run, anchor = scan_probes(text, lower, upper, settings, anchor)  # text after the last line
    exact = from_periodic_run(text, exact_run) if exact_run else None
    if line_run is None or (exact is not None and exact.start <= line_run.start):
        return exact
    lines = explain_line_run(text, line_run, lower, upper, settings)
    if lines.kind != "exact":
        lines = from_line_run(line_scan.follow())
    if exact is not None and exact.start <= lines.start:
        return exact
    if exact is not None and lines.end >= exact.start:
        # The line loop runs into the exact one: one stretch of garbage.
        lines = Repetition(lines.start, lines.period, max(lines.end, exact.end), lines.kind)
    return lines


def detect_loop(text: str, settings: CleaningSettings = DEFAULT_SETTINGS) -> LoopDetection | None:
    """Batch counterpart of StreamingLoopDetector: the earliest loop in the whole text."""
    loop = find_loop(text, 0, len(text), settings)
    return loop.detection(len(text), settings) if loop else None
