"""Watching a streamed answer for a loop: the streaming detector, plus where each chunk ended in
characters and in tokens, so the tokens decoded after the loop's onset can be counted."""

from __future__ import annotations

from array import array
from bisect import bisect_right

from workers.cleaning import CleaningSettings, LoopDetection, StreamingLoopDetector
from workers.generation.request import LoopAbort


class LoopWatch:
    def __init__(self, settings: CleaningSettings | None) -> None:
        self._detector = StreamingLoopDetector(settings) if settings is not None else None
        self.chars = 0  # how much of the answer has been fed
        self._boundary_chars = array("q")
        self._boundary_tokens = array("q")
        self._counted = True  # every chunk so far came with a token count
        self.detection: LoopDetection | None = None
        self._detected_at = 0

    def append(self, delta: str, tokens: int | None) -> bool:
        """Take the next piece of the answer and the output tokens decoded so far (None if unknown).
        True exactly once: when the loop becomes certain."""
        self.chars += len(delta)
        if tokens is None:
            self._counted = False
        else:
            self._boundary_chars.append(self.chars)
            self._boundary_tokens.append(tokens)
        if self._detector is None or self.detection is not None or not delta:
            return False
        self.detection = self._detector.feed(delta)
        if self.detection is None:
            return False
        self._detected_at = self.chars
        return True

    def loop_abort(self, final_text: str, final_tokens: int | None) -> LoopAbort | None:
        """The record of the loop (None if none was found), measured on the answer as stored."""
        if self.detection is None:
            return None
        onset = self.detection.start
        return LoopAbort(
            onset_char=onset,
            period=self.detection.period,
            detected_at_char=self._detected_at,
            chars_after_onset=max(0, len(final_text) - onset),
            tokens_after_onset=None if final_tokens is None or not self._counted else final_tokens - self._tokens_at(onset),
        )

    def _tokens_at(self, char: int) -> int:
        # The last chunk that ended at or before the onset: a lower bound of the tokens before it,
        # so the count after the onset errs by at most one chunk, on the high side.
        i = bisect_right(self._boundary_chars, char)
        return self._boundary_tokens[i - 1] if i else 0
