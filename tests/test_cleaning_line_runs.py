"""The line-level scan: its bulk follow-through must equal reading line by line."""

from __future__ import annotations

import random

import pytest

from workers.cleaning import CleaningSettings
from workers.cleaning.line_runs import LineRunTracker, LineScan

SETTINGS = CleaningSettings()
FENCES = ["```python", "```", "```py", "``` python"]
JUNK = ["", " ", "n", "\t", "}", "  "]


def line_by_line(text: str, settings: CleaningSettings = SETTINGS):
    """Reference: the tracker fed one line at a time, as the streaming detector does."""
    tracker = LineRunTracker(settings)
    start = 0
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        end = min(start + len(line) + 1, len(text))
        tracker.add_line(line, start, end)
        start = end
        if tracker.found_closed:
            break
    tracker.finish()
    return tracker.found


def bulk(text: str, settings: CleaningSettings = SETTINGS):
    scan = LineScan(text, 0, len(text), settings)
    scan.find()
    return scan.follow()


def flood(rng: random.Random) -> str:
    """Fence-like lines with junk, occasional strays, sometimes a clean ending."""
    vocabulary = rng.sample(FENCES, k=rng.randint(1, 4))
    lines = [vocabulary[0], vocabulary[0]]
    for _ in range(rng.randint(20, 400)):
        roll = rng.random()
        if roll < 0.2:
            lines.append(rng.choice(JUNK))
        elif roll < 0.23:
            lines.append(f"stray line {rng.randint(0, 10**6)}")
        else:
            lines.append(rng.choice(vocabulary))
    if rng.random() < 0.5:
        lines += ["Finally, here is a normal sentence.", "And another one that is different."]
        lines += [f"normal line {i}" for i in range(rng.randint(0, 30))]
    text = "Intro text before the flood.\n" + "\n".join(lines)
    return text + ("\n" if rng.random() < 0.7 else "")


@pytest.mark.parametrize("seed", range(120))
def test_bulk_follow_equals_line_by_line(seed: int):
    text = flood(random.Random(seed))
    expected, got = line_by_line(text), bulk(text)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.kind, got.start, got.unit_end, got.end, got.lines) == (
        expected.kind, expected.start, expected.unit_end, expected.end, expected.lines)


@pytest.mark.parametrize("seed", range(40))
def test_bulk_junk_follow_equals_line_by_line(seed: int):
    rng = random.Random(500 + seed)
    junk_lines = [rng.choice(JUNK + ["\t \t", "ab"]) for _ in range(rng.randint(30, 300))]
    tail = rng.choice(["", "visible text again\n", "xyz", "more\ntext\n"])
    text = "Solution done.\n" + "\n".join(junk_lines) + "\n" + tail
    expected, got = line_by_line(text), bulk(text)
    assert (expected is None) == (got is None)
    if expected is not None:
        assert (got.kind, got.start, got.end, got.lines) == (expected.kind, expected.start, expected.end, expected.lines)


def test_five_distinct_lines_repeating_are_left_to_the_exact_scan():
    unit = "".join(f"line {i}\n" for i in range(5))
    assert bulk(unit * 100) is None  # more distinct lines than max_distinct_lines


def test_vocabulary_persists_beyond_the_window():
    lines = ["```python", "```python", "```", "```py", "``` python"] + ["```python"] + ["```"] * 6 + ["```python"] * 60
    found = bulk("\n".join(lines) + "\n")
    assert found is not None and found.kind == "echo" and found.start == 0


def test_a_second_stray_too_soon_ends_the_run():
    body = ["A repeated line"] * 10 + ["one stray"] + ["A repeated line"] * 2 + ["second stray"]
    text = "\n".join(body + ["A repeated line"] * 60) + "\n"
    found = bulk(text, CleaningSettings(max_distinct_lines=1))
    # The first run ends at the second stray; the loop found is the one after it.
    assert found is not None and found.start > text.index("second stray")
