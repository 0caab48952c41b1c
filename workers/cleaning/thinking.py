"""Split Qwen3 reasoning (<think>...</think>) from the answer.

Offsets, not copies: the cleaner detects loops in the raw text and reports
offsets in it, so the split only says where each part lies.

* "<think>R</think>A": reasoning R, answer A (leading whitespace of A skipped).
* "<think>R" with no closing tag: generation stopped while reasoning; the
  whole response is reasoning and there is no answer.
* "R</think>A" with no opening tag: the chat template opened the block in the
  prompt (some Qwen3 templates do), so R is still reasoning.
* anything else: no reasoning, the answer is the whole text, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class ThinkingSplit:
    reasoning_start: int | None  # offset of the reasoning's first char; None if no reasoning
    reasoning_end: int | None  # offset of "</think>", or len(raw) when unclosed
    answer_start: int  # offset of the answer's first char (len(raw) when there is none)
    closed: bool  # False only for an unclosed <think>

    @property
    def has_reasoning(self) -> bool:
        return self.reasoning_start is not None

    @property
    def only_reasoning(self) -> bool:
        return self.has_reasoning and not self.closed


def split_thinking(raw: str) -> ThinkingSplit:
    lead = _skip_whitespace(raw, 0)
    if raw.startswith(THINK_OPEN, lead):
        content = lead + len(THINK_OPEN)
        close = raw.find(THINK_CLOSE, content)
        if close < 0:
            return ThinkingSplit(content, len(raw), len(raw), closed=False)
        return ThinkingSplit(content, close, _skip_whitespace(raw, close + len(THINK_CLOSE)), closed=True)
    close = raw.find(THINK_CLOSE)
    if close >= 0 and raw.find(THINK_OPEN, 0, close) < 0:
        return ThinkingSplit(0, close, _skip_whitespace(raw, close + len(THINK_CLOSE)), closed=True)
    return ThinkingSplit(None, None, 0, closed=True)


def _skip_whitespace(text: str, offset: int) -> int:
    # Without copying the rest of a possibly huge text (a whitespace flood is copied at most once).
    end = offset
    while end < len(text) and text[end].isspace():
        if end - offset >= 64:
            rest = text[end:]
            return len(text) - len(rest.lstrip())
        end += 1
    return end
