"""StreamingLoopDetector: same loops as the batch detector, found early, at bounded cost."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from workers.cleaning import CleaningSettings, LoopDetection, StreamingLoopDetector, detect_loop

CORPUS = Path(__file__).parent / "cleaning_corpus"
CASE_DIRS = sorted(p for p in CORPUS.iterdir() if (p / "expected.json").is_file())
SETTINGS = CleaningSettings()


def _raw(case_dir: Path) -> str:
    return (case_dir / "raw.md").read_text(encoding="utf-8")


def _has_loop(case_dir: Path) -> bool:
    expected = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
    # A loop in closed reasoning does not make the answer degenerate, but it is a loop.
    return expected["degenerate"] or expected["loop_in_reasoning"]


LOOP_CASES = [d for d in CASE_DIRS if _has_loop(d)]
LEGIT_CASES = [d for d in CASE_DIRS if not _has_loop(d)]


def stream(text: str, chunk_sizes: random.Random | int) -> tuple[LoopDetection | None, int | None]:
    """Feed text in chunks; returns the detection and how many chars had been fed when it came."""
    detector = StreamingLoopDetector(SETTINGS)
    fed_at_detection = None
    pos = 0
    while pos < len(text):
        size = chunk_sizes if isinstance(chunk_sizes, int) else chunk_sizes.randint(1, 20)
        detection = detector.feed(text[pos:pos + size])
        pos += size
        if detection is not None and fed_at_detection is None:
            fed_at_detection = min(pos, len(text))
    return detector.detection, fed_at_detection


@pytest.mark.parametrize("case_dir", LOOP_CASES, ids=[d.name for d in LOOP_CASES])
def test_streaming_finds_the_batch_loop_within_its_first_repeat(case_dir: Path):
    raw = _raw(case_dir)
    batch = detect_loop(raw, SETTINGS)
    assert batch is not None
    detection, fed_at = stream(raw, random.Random(case_dir.name))
    assert detection is not None
    assert detection.period == batch.period
    assert batch.start <= detection.start < batch.start + batch.period
    # Found while the loop was still going, not once the whole text was in.
    assert fed_at < len(raw) - batch.period


@pytest.mark.parametrize("case_dir", LOOP_CASES, ids=[d.name for d in LOOP_CASES])
def test_exact_loops_are_reported_within_a_probe_step_of_their_threshold(case_dir: Path):
    raw = _raw(case_dir)
    batch = detect_loop(raw, SETTINGS)
    _, fed_at = stream(raw, 7)
    # Threshold length, plus one probe step, the gram and one unit of slack for the alignment.
    exact_bound = SETTINGS.min_loop_chars(batch.period) + SETTINGS.scan_step + SETTINGS.gram_chars + 2 * batch.period
    # Line loops need min_echo_lines lines (short lines), or min_junk_lines junk lines.
    line_bound = 4 * SETTINGS.min_echo_lines * max(batch.period, 12)
    assert fed_at - batch.start <= max(exact_bound, line_bound)


@pytest.mark.parametrize("case_dir", LEGIT_CASES, ids=[d.name for d in LEGIT_CASES])
@pytest.mark.parametrize("chunk", [1, 5, 20])
def test_no_detection_on_legit_answers(case_dir: Path, chunk: int):
    detection, _ = stream(_raw(case_dir), chunk)
    assert detection is None


@pytest.mark.parametrize("chunk", [1, 3, 20, 10_000_000])
def test_chunking_does_not_change_the_detection(chunk: int):
    raw = _raw(CORPUS / "degenerate_python_fence_loop")
    reference, _ = stream(raw, 13)
    detection, _ = stream(raw, chunk)
    assert (detection.start, detection.period) == (reference.start, reference.period)


def test_detection_is_sticky_and_exposed():
    detector = StreamingLoopDetector()
    text = "Intro line.\n" + "```python\n" * 200
    first = None
    for i in range(0, len(text), 9):
        result = detector.feed(text[i:i + 9])
        first = first or result
    assert first is not None
    assert detector.detection == first
    assert detector.feed("anything else at all\n") == first
    assert detector.feed("") == first


def test_empty_and_tiny_feeds():
    detector = StreamingLoopDetector()
    assert detector.feed("") is None
    for ch in "short answer, no loop here.\n":
        assert detector.feed(ch) is None
    assert detector.detection is None


def test_streaming_severity_grows_with_the_share_of_the_loop():
    loop = "Let me verify the grid size. " * 100
    late = StreamingLoopDetector()
    late.feed("A long preamble. " + "".join(f"Step {i} is fine. " for i in range(400)))
    for i in range(0, len(loop), 10):
        late.feed(loop[i:i + 10])
    early = StreamingLoopDetector()
    for i in range(0, len(loop), 10):
        early.feed(loop[i:i + 10])
    assert late.detection is not None and early.detection is not None
    assert 0.0 < late.detection.severity < early.detection.severity <= 1.0


def _varied_text(chars: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    names = ["idx", "row", "col", "acc", "tile", "lane", "warp", "stride", "offset", "scale"]
    lines = []
    size = 0
    while size < chars:
        name = rng.choice(names)
        line = f"    float {name}_{rng.randint(0, 99999)} = {name}[{rng.randint(0, 4096)}] * {rng.random():.5f};"
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:chars]


def _feed_all(text: str, chunk: int) -> float:
    detector = StreamingLoopDetector()
    started = time.perf_counter()
    for i in range(0, len(text), chunk):
        detector.feed(text[i:i + chunk])
    elapsed = time.perf_counter() - started
    assert detector.detection is None
    return elapsed


def test_cost_per_char_is_bounded():
    small, large = _varied_text(250_000), _varied_text(1_000_000)
    # Best of two runs to keep scheduler noise out; a rescan per chunk would be ~16x, not ~4x.
    t_small = min(_feed_all(small, 16) for _ in range(2))
    t_large = min(_feed_all(large, 16) for _ in range(2))
    assert t_large < 7 * t_small
