"""Where to cut a loop: after the first whole occurrence of its unit.

A periodic run can be read from any rotation of its unit: "n\\n```python\\n```python"
is as much a repetition of "n\\n```pytho" as of "```python\\n". The cut must
keep a unit that makes sense to a reader and to the markdown repair, so the
unit is rotated to start at a line start (units spanning lines), else at a
sentence start, else at a word start. Everything before the unit's first whole
occurrence is kept untouched.
"""

from __future__ import annotations

_SENTENCE_END = ".!?:;"


def align_unit_start(text: str, start: int, period: int, end: int) -> int:
    """First offset in the periodic run text[start:end] where a readable unit begins.

    Only offsets that still leave one whole unit inside the run are considered.
    Inside the run text[x - 1] == text[x - 1 + period], so a unit that ends at a
    boundary also starts at one.
    """
    last = min(start + period, end - period)
    if last < start:
        return start
    unit = text[start:start + period]
    if "\n" in unit:
        return _line_aligned(text, start, period, last)
    for is_boundary in (_ends_sentence, _ends_word):
        for x in range(start, last + 1):
            if is_boundary(text, x, period):
                return x
    return start


def _line_aligned(text: str, start: int, period: int, last: int) -> int:
    """First line start in the run, preferring one whose line is not blank.

    (A unit "\n### Heading\n...\n" reads better rotated to "### Heading\n...\n\n".)
    """
    first_line_start = None
    newline = text.find("\n", start + period - 1, last + period)
    while newline >= 0:
        x = newline - period + 1
        # At x == start the character before lies outside the run, check it.
        if x > start or x == 0 or text[x - 1] == "\n":
            if text[x] != "\n":
                return x
            if first_line_start is None:
                first_line_start = x
        newline = text.find("\n", newline + 1, last + period)
    return start if first_line_start is None else first_line_start


def _ends_sentence(text: str, x: int, period: int) -> bool:
    tail = x + period
    return (
        period >= 2
        and text[tail - 1].isspace()
        and text[tail - 2] in _SENTENCE_END
        and (x == 0 or text[x - 1].isspace())
        and not text[x].isspace()
    )


def _ends_word(text: str, x: int, period: int) -> bool:
    return text[x + period - 1].isspace() and (x == 0 or text[x - 1].isspace()) and not text[x].isspace()


def cut_offset(unit_start: int, period: int) -> int:
    """Offset of the cut: right after the first whole unit."""
    return unit_start + period
