"""Fenced code blocks: parsing and repair after a cut.

Fences are found with str.find on "```", not with a regex, so the parse is
linear whatever the model emitted. Rules (CommonMark, relaxed for LLM output):
a fence is a line made of optional indentation, three or more backticks and an
info string without backticks; a block closes at a line of at least as many
backticks and nothing else. Any other fence-like line inside a block (the
"```python" of a looping model) is content.
"""

from __future__ import annotations

from dataclasses import dataclass

FENCE = "```"


@dataclass(frozen=True)
class FencedBlock:
    lang: str  # first word of the info string, lower-cased; "" when there is none
    content: str  # text between the opening line and the closing line
    start: int  # offset of the opening fence line
    end: int  # offset just after the closing fence line (len(text) when unclosed)
    ticks: int  # number of backticks of the opening fence
    closed: bool


@dataclass
class _OpenFence:
    lang: str
    ticks: int
    start: int
    content_start: int


def iter_fenced_blocks(text: str) -> list[FencedBlock]:
    blocks: list[FencedBlock] = []
    open_fence: _OpenFence | None = None
    pos = 0
    while True:
        tick = text.find(FENCE, pos)
        if tick < 0:
            break
        line_start = text.rfind("\n", 0, tick) + 1
        line_end = _line_end(text, tick)
        next_line = min(line_end + 1, len(text))
        if text[line_start:tick].strip(" \t"):
            pos = tick + len(FENCE)  # backticks inside a line: inline code, not a fence
            continue
        ticks = _count_backticks(text, tick, line_end)
        info = text[tick + ticks:line_end].strip()
        pos = next_line
        if open_fence is None:
            if "`" not in info:
                lang = info.split(None, 1)[0].lower() if info else ""
                open_fence = _OpenFence(lang, ticks, line_start, next_line)
        elif not info and ticks >= open_fence.ticks:
            content = text[open_fence.content_start:line_start]
            blocks.append(FencedBlock(open_fence.lang, content, open_fence.start, next_line, open_fence.ticks, True))
            open_fence = None
    if open_fence is not None:
        content = text[open_fence.content_start:]
        blocks.append(FencedBlock(open_fence.lang, content, open_fence.start, len(text), open_fence.ticks, False))
    return blocks


def _line_end(text: str, offset: int) -> int:
    newline = text.find("\n", offset)
    return len(text) if newline < 0 else newline


def _count_backticks(text: str, offset: int, line_end: int) -> int:
    run = text[offset:line_end]
    return len(run) - len(run.lstrip("`"))


def close_open_fence(text: str) -> tuple[str, bool]:
    """Close a code block the text leaves open; returns (text, whether it was changed).

    Only appends: the text itself is never altered.
    """
    blocks = iter_fenced_blocks(text)
    if not blocks or blocks[-1].closed:
        return text, False
    fence = "`" * blocks[-1].ticks
    return (text + fence if text.endswith("\n") else text + "\n" + fence), True
