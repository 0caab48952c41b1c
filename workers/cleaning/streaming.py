"""Loop detection while tokens stream in, to stop a generation that is looping.

Runs the batch detector's two scans incrementally, so both report the same
loop (same period, same first unit):

* the exact scan probes at the same absolute offsets as the batch scan, each
  probe once, as soon as the text reaches it. A periodic run a probe verifies
  that is not yet long enough but reaches the end of the text so far is kept
  "open" and extended as chunks arrive, so a loop is reported the moment it is
  long enough (the batch scan sees it at that same probe, with hindsight);
* the line scan takes each line as it completes.

Only the last `keep` chars are held for probing (a loop is decided long before
it is that long), so the work per fed char is bounded whatever the length of
the text: an rfind over max_period chars and a bounded verification per probe
(one per probe step), O(1) per completed line, and, while a run is open, a
comparison of the new chars with those one period back.
"""

from __future__ import annotations

from .line_runs import LineRun, LineRunTracker
from .periodic import PeriodicRun, first_anchor, first_mismatch_forward, probe
from .repetition import (
    DEFAULT_SETTINGS,
    LoopDetection,
    Repetition,
    explain_line_run,
    from_line_run,
    from_periodic_run,
)
from .settings import CleaningSettings


class StreamingLoopDetector:
    def __init__(self, settings: CleaningSettings = DEFAULT_SETTINGS):
        self._settings = settings
        # Longest stretch a probe may need to look back over: an undecided run
        # plus one unit plus the gram; twice that leaves room for the alignment.
        self._keep = 2 * (settings.longest_undecided_run() + settings.max_period + settings.gram_chars)
        self._window = ""  # text[self._base:self._fed]
        self._base = 0
        self._fed = 0
        self._probe_step = settings.probe_step()
        self._next_anchor = first_anchor(0, settings)
        self._open_runs: list[PeriodicRun] = []  # absolute offsets, each reaching the end of the text
        self._lines = LineRunTracker(settings)
        self._line_parts: list[str] = []
        self._line_start = 0
        self._detection: LoopDetection | None = None

    @property
    def detection(self) -> LoopDetection | None:
        return self._detection

    @property
    def chars_fed(self) -> int:
        return self._fed

    def feed(self, chunk: str) -> LoopDetection | None:
        """Take the next chunk; returns the detection once a loop is certain (then always)."""
        if self._detection is not None or not chunk:
            return self._detection
        chunk_start = self._fed
        self._append(chunk)
        candidates = [self._extend_open_runs(), self._feed_lines(chunk, chunk_start)]
        if self._fed >= self._next_anchor:
            candidates.append(self._probe_due_anchors())
        found = [loop for loop in candidates if loop is not None]
        if found:
            loop = min(found, key=lambda candidate: candidate.start)
            self._detection = loop.detection(self._fed, self._settings)
        self._trim_window()
        return self._detection

    def _append(self, chunk: str) -> None:
        # Drop the attribute's reference first: with the string referenced once,
        # CPython appends in place instead of copying the whole window per chunk.
        window, self._window = self._window, ""
        window += chunk
        self._window = window
        self._fed += len(chunk)

    # -- exact scan ---------------------------------------------------------

    def _extend_open_runs(self) -> Repetition | None:
        still_open = []
        loop = None
        for run in self._open_runs:
            end = run.end - self._base
            stop = first_mismatch_forward(self._window, max(0, end - run.period), run.period, len(self._window))
            grown = PeriodicRun(run.start, stop + run.period + self._base, run.period)
            if loop is None and self._settings.is_loop(grown.period, grown.length):
                loop = self._repetition(grown)
            elif grown.end == self._fed:
                still_open.append(grown)
        self._open_runs = still_open if loop is None else []
        return loop

    def _probe_due_anchors(self) -> Repetition | None:
        loop = None
        while self._next_anchor <= self._fed and loop is None:
            found_open: list[PeriodicRun] = []
            run = probe(
                self._window, self._next_anchor - self._base, 0, len(self._window), self._settings,
                open_runs=found_open,
            )
            self._next_anchor += self._probe_step
            if run is not None:
                loop = self._repetition(PeriodicRun(run.start + self._base, run.end + self._base, run.period))
            self._track(found_open)
        return loop

    def _track(self, local_runs: list[PeriodicRun]) -> None:
        for local in local_runs:
            run = PeriodicRun(local.start + self._base, local.end + self._base, local.period)
            if all((run.start, run.period) != (known.start, known.period) for known in self._open_runs):
                self._open_runs.append(run)

    def _repetition(self, run: PeriodicRun) -> Repetition:
        local = PeriodicRun(run.start - self._base, run.end - self._base, run.period)
        loop = from_periodic_run(self._window, local)
        return Repetition(loop.start + self._base, loop.period, loop.end + self._base, loop.kind)

    def _trim_window(self) -> None:
        if len(self._window) > 2 * self._keep:
            drop = len(self._window) - self._keep
            self._window = self._window[drop:]
            self._base += drop
            self._open_runs = [run for run in self._open_runs if run.start >= self._base]

    # -- line scan ----------------------------------------------------------

    def _feed_lines(self, chunk: str, chunk_start: int) -> Repetition | None:
        if "\n" not in chunk:
            self._line_parts.append(chunk)
            return None
        pieces = chunk.split("\n")
        self._line_parts.append(pieces[0])
        first = "".join(self._line_parts)
        self._line_parts = [pieces[-1]] if pieces[-1] else []
        # Every piece but the last ends with a newline: complete lines.
        complete = [first] + pieces[1:-1]
        self._line_start = self._lines.add_lines(complete, self._line_start, self._fed)
        found = self._lines.found
        return None if found is None else self._explain(found)

    def _explain(self, found: LineRun) -> Repetition:
        base = self._base
        if found.start < base:
            return from_line_run(found)
        local = LineRun(found.kind, found.start - base, found.unit_end - base, found.end - base)
        loop = explain_line_run(self._window, local, 0, len(self._window), self._settings)
        return Repetition(loop.start + base, loop.period, loop.end + base, loop.kind)
