"""Approximate repetition at line level.

Exact periodicity misses loops whose repeats vary a little, typically fence
floods under sampling: "```python", "```", "``python", "n" in an irregular
order. This tracker reads lines one at a time (so the streaming detector can
use it as is) and flags

* an *echo run*: lines that each repeat one of the last `line_window` lines,
  drawn from at most `max_distinct_lines` distinct lines (new lines join
  while there is room), with an occasional stray line tolerated once the
  vocabulary is full, and junk lines ("", "n", "}") ignored;
* a *junk run*: many consecutive junk lines (irregular whitespace floods).

Real code never has 40 lines made of 4 distinct lines, nor 40 blank lines in a
row, so the thresholds leave legitimate repetition alone.
"""

from __future__ import annotations

import operator
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .settings import CleaningSettings


@dataclass
class LineRun:
    """A run of lines; `unit_end` is where the first repeat begins."""

    kind: str  # "echo" or "junk"
    start: int
    unit_end: int
    end: int
    lines: int = 0  # echoing (or junk) lines counted so far
    vocabulary: set[str] = field(default_factory=set)
    since_stray: int = 0

    @property
    def period(self) -> int:
        return max(1, self.unit_end - self.start)


class LineRunTracker:
    """Feed lines in order with add_line()/add_lines(); `found` is the first run that is a loop.

    Once found, the run keeps growing while lines continue it; `found_closed`
    tells whether it has ended.
    """

    def __init__(self, settings: CleaningSettings):
        self._settings = settings
        # Last `line_window` non-junk lines and their offsets (two deques: `in` on
        # the contents runs in C, which keeps the common case cheap).
        self._contents: deque[str] = deque(maxlen=settings.line_window)
        self._offsets: deque[int] = deque(maxlen=settings.line_window)
        self._echo: LineRun | None = None
        self._junk: LineRun | None = None
        self.found: LineRun | None = None
        self.found_closed = False
        self.lines_read = 0  # lines consumed by the last add_lines() call

    def add_line(self, line: str, start: int, end: int) -> None:
        """`line` without its newline; text[start:end] is the line including it."""
        self.add_lines([line], start, end)

    def add_lines(self, lines: Iterable[str], start: int, stop: int, until_found: bool = False) -> int:
        """Lines in order, the first at `start`, none reaching past `stop` (a cap on the last one's end).

        Returns the offset after the last line read; stops early once a found
        loop has ended (`found_closed`), or, with `until_found`, once one is found.
        """
        junk_chars = self._settings.junk_line_chars
        contents = self._contents
        remember_content, remember_offset = contents.append, self._offsets.append
        read = 0
        for line in lines:
            read += 1
            end = start + len(line) + 1
            if end > stop:
                end = stop
            content = line.strip()
            # found / found_closed can only change in the calls below; check them only then.
            if len(content) <= junk_chars:
                self._add_junk(start, end)
                changed = True
            else:
                changed = self._junk is not None
                if changed:
                    self._close_junk()
                # Common case, kept inline: a line never seen lately, outside any run.
                if self._echo is not None or content in contents:
                    self._add_content(content, start, end)
                    changed = True
                remember_content(content)
                remember_offset(start)
            start = end
            if changed and (self.found_closed or (until_found and self.found is not None)):
                break
        self.lines_read = read
        return start

    def follow_found(self, lines: list[str], start: int, stop: int) -> int:
        """Same result as add_lines() once a loop is found, in bulk (C-level scans).

        A flood of a million short lines is followed to its end without a
        Python step per line: only lines that leave the run's vocabulary (strays,
        new unit lines, the end) go through add_lines().
        """
        lengths = list(map(len, lines))
        stripped = list(map(str.strip, lines))
        junk = bytes(map(self._settings.junk_line_chars.__ge__, map(len, stripped)))
        pos = 0
        while pos < len(lines) and not self.found_closed:
            run = self.found
            if run is not self._echo:
                break  # junk runs are followed on the text itself (LineScan)
            allowed = bytes(map(operator.or_, junk, map(frozenset(run.vocabulary).__contains__, stripped)))
            size = len(run.vocabulary)
            while pos < len(lines) and not self.found_closed and len(run.vocabulary) == size:
                leave = allowed.find(0, pos)
                leave = len(lines) if leave < 0 else leave
                start = self._absorb_echo_lines(run, stripped, junk, lengths, pos, leave, start, stop)
                if leave < len(lines):
                    start = self.add_lines([lines[leave]], start, stop)
                pos = leave + 1
        return start

    def _absorb_echo_lines(
        self, run: LineRun, stripped: list[str], junk: bytes, lengths: list[int],
        pos: int, leave: int, start: int, stop: int,
    ) -> int:
        """Lines pos..leave-1 are junk or in the run's vocabulary: count them in one go."""
        if leave == pos:
            return start
        end = start + sum(lengths[pos:leave]) + (leave - pos)  # as if the last line ended with a newline
        echoes = (leave - pos) - junk.count(1, pos, leave)
        if echoes:
            last = junk.rfind(0, pos, leave)
            run.lines += echoes
            run.since_stray += echoes
            run.end = min(end - sum(lengths[last + 1:leave]) - (leave - last - 1), stop)
            self._remember_last_lines(stripped, junk, lengths, pos, leave, end)
        end = min(end, stop)
        self._junk = None  # junk inside an echo run is never the found loop; it matters no more
        return end

    def _remember_last_lines(
        self, stripped: list[str], junk: bytes, lengths: list[int], pos: int, leave: int, end: int
    ) -> None:
        """Bring the recent-lines window to what line-by-line reading would have left."""
        recent = []
        offset = end
        index = leave
        while len(recent) < self._settings.line_window:
            previous = junk.rfind(0, pos, index)
            if previous < 0:
                break
            offset -= sum(lengths[previous:index]) + (index - previous)
            recent.append((stripped[previous], offset))
            index = previous
        for content, offset in reversed(recent):
            self._contents.append(content)
            self._offsets.append(offset)

    def finish(self) -> None:
        self._close_junk()
        self._close_echo()

    # -- junk lines -------------------------------------------------------

    def _add_junk(self, start: int, end: int) -> None:
        run = self._junk
        if run is None:
            run = self._junk = LineRun("junk", start, end, end)
        run.lines += 1
        run.end = end
        if run is self.found:
            return
        if self.found is None and run.lines >= self._settings.min_junk_lines:
            self.found = run

    def _close_junk(self) -> None:
        if self._junk is not None and self._junk is self.found:
            self.found_closed = True
        self._junk = None

    # -- echo lines -------------------------------------------------------

    def _add_content(self, content: str, start: int, end: int) -> None:
        run = self._echo
        echoed_at = self._last_seen(content)
        if run is not None:
            # Inside a run, its vocabulary counts however long ago a line was seen.
            if content in run.vocabulary or (echoed_at is not None and self._fits_vocabulary(run, content)):
                self._extend(run, content, end)
                return
            if len(run.vocabulary) < self._settings.max_distinct_lines:
                run.vocabulary.add(content)  # a new line of the unit, seen once so far
                return
            if run.since_stray >= self._settings.stray_line_gap:
                run.since_stray = 0  # one stray line; the run goes on
                return
            self._close_echo()
        if echoed_at is not None:
            self._start_echo(content, echoed_at, start, end)

    def _last_seen(self, content: str) -> int | None:
        for seen, offset in zip(reversed(self._contents), reversed(self._offsets)):
            if seen == content:
                return offset
        return None

    def _fits_vocabulary(self, run: LineRun, content: str) -> bool:
        return content in run.vocabulary or len(run.vocabulary) < self._settings.max_distinct_lines

    def _start_echo(self, content: str, echoed_at: int, start: int, end: int) -> None:
        # The unit is everything from the echoed line's first appearance up to here.
        vocabulary = {seen for seen, offset in zip(self._contents, self._offsets) if offset >= echoed_at}
        if len(vocabulary) > self._settings.max_distinct_lines:
            return
        run = self._echo = LineRun("echo", echoed_at, start, end, vocabulary=vocabulary)
        self._extend(run, content, end)

    def _extend(self, run: LineRun, content: str, end: int) -> None:
        run.vocabulary.add(content)
        run.lines += 1
        run.since_stray += 1
        run.end = end
        if self.found is None and self._qualifies(run):
            self.found = run

    def _qualifies(self, run: LineRun) -> bool:
        s = self._settings
        return run.lines >= s.min_echo_lines and run.end - run.start >= s.min_covered_chars

    def _close_echo(self) -> None:
        if self._echo is not None and self._echo is self.found:
            self.found_closed = True
        self._echo = None


_BLOCK_CHARS = 1 << 16  # lines are split a block at a time: a flood is never split whole
_MAX_LINE_CHARS = 2 * _BLOCK_CHARS
_NON_SPACE = re.compile(r"\S")  # a single character class: linear, no backtracking


class LineScan:
    """The line scan over text[lower:upper] for the batch detector.

    find() reads lines until the first loop is found (not further: the caller
    may already know that an exact loop explains it); follow() then extends
    that loop to its end with bulk scans.
    """

    def __init__(self, text: str, lower: int, upper: int, settings: CleaningSettings):
        self._text = text
        self._upper = upper
        self._settings = settings
        self._tracker = LineRunTracker(settings)
        self._pos = lower  # start of the next unread line

    @property
    def position(self) -> int:
        """Start of the next unread line."""
        return self._pos

    def find(self, until: int | None = None) -> LineRun | None:
        """Read lines until a loop is found, or past `until` (then call again to go on)."""
        tracker = self._tracker
        if tracker.found is not None:
            return tracker.found
        for lines, start, block_end in self._blocks(self._upper if until is None else until):
            offset = tracker.add_lines(lines, start, block_end, until_found=True)
            if tracker.found is not None:
                self._pos = offset
                return tracker.found
            self._pos = block_end
        if self._pos >= self._upper:
            tracker.finish()
        return tracker.found

    def follow(self) -> LineRun | None:
        tracker = self._tracker
        run = tracker.found
        if run is None or tracker.found_closed:
            return run
        if run.kind == "junk":
            self._follow_junk(run)
            return run
        for lines, start, block_end in self._blocks(self._upper):
            tracker.follow_found(lines, start, block_end)
            if tracker.found_closed:
                break
        tracker.finish()
        return run

    def _blocks(self, limit: int):
        """(lines, start, end) blocks of whole lines; a line longer than _MAX_LINE_CHARS is read in pieces.

        (Copying a multi-megabyte line to compare it is slow and pointless: no
        line loop is made of such lines; the exact scan handles long floods.)
        """
        text, upper = self._text, self._upper
        while self._pos < min(limit, upper):
            start = self._pos
            newline = text.find("\n", min(start + _BLOCK_CHARS, limit, upper) - 1, upper)
            block_end = upper if newline < 0 else newline + 1
            block_end = min(block_end, max(start + _MAX_LINE_CHARS, text.rfind("\n", start, block_end) + 1))
            lines = text[start:block_end].split("\n")
            if lines[-1] == "":
                lines.pop()  # the empty piece after a final newline is not a line
            self._pos = block_end
            yield lines, start, block_end

    def _follow_junk(self, run: LineRun) -> None:
        """A junk run goes on until the first line with more than junk_line_chars visible chars."""
        text, upper, pos = self._text, self._upper, self._pos
        while pos < upper:
            visible = _NON_SPACE.search(text, pos, upper)
            if visible is None:
                break
            previous_newline = text.rfind("\n", pos, visible.start())
            line_start = pos if previous_newline < 0 else previous_newline + 1
            newline = text.find("\n", visible.start(), upper)
            line_end = upper if newline < 0 else newline + 1
            if len(text[line_start:line_end].strip()) > self._settings.junk_line_chars:
                run.lines += text.count("\n", self._pos, line_start)
                run.end = line_start
                self._tracker.found_closed = True
                return
            pos = line_end
        run.lines += text.count("\n", self._pos, upper) + (text[upper - 1] != "\n" if upper > self._pos else 0)
        run.end = upper
