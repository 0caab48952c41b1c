"""Property-style tests over seeded random answers (hypothesis is not installed).

* Legitimate answers, assembled from realistic pieces including every kind of
  legitimate repetition, come through byte for byte with their code.
* A loop appended to any legitimate answer is found at its first unit, the
  text before it survives untouched, and the streaming detector agrees.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from workers.cleaning import CleaningSettings, StreamingLoopDetector, clean_response, detect_loop
from workers.cleaning.thinking import split_thinking

SETTINGS = CleaningSettings()
CORPUS = Path(__file__).parent / "cleaning_corpus"
SOLUTIONS = sorted(p.read_text(encoding="utf-8") for p in CORPUS.glob("legit_*/code.py"))

SENTENCES = [
    "The kernel assigns one thread per output element.",
    "Shared memory tiles cut global memory traffic.",
    "I check that the inputs are contiguous CUDA tensors.",
    "Wait, the bias has to broadcast over the channel dimension.",
    "The launch uses 256 threads per block.",
    "Hmm, the reduction needs a second pass for large rows.",
    "Let me verify the output shape against the reference.",
    "Fusing the activation saves one read and one write.",
    "The grid covers every row of the input.",
    "Vectorized float4 loads would help for aligned sizes.",
]


def prose(rng: random.Random, sentences: int) -> str:
    picked = rng.sample(SENTENCES, k=min(sentences, len(SENTENCES)))
    return " ".join(picked) + "\n"


def legit_repetition(rng: random.Random) -> str:
    """One kind of repetition real solutions contain, at a legitimate size."""
    kind = rng.randrange(8)
    if kind == 0:
        return "    acc = fmaf(acc, x, 1.0f);\n" * rng.randint(2, 16)
    if kind == 1:
        return "".join(f"    sum += As[ty][{k}] * Bs[{k}][tx];\n" for k in range(rng.randint(8, 32)))
    if kind == 2:
        return "// " + "=" * rng.randint(20, 100) + "\n"
    if kind == 3:
        return "".join(f"#define PARAM_{i} {rng.randint(0, 999)}\n" for i in range(rng.randint(5, 60)))
    if kind == 4:
        return "        x = self.fused(x)\n" * 3
    if kind == 5:
        return "\n" * rng.randint(1, 4)
    if kind == 6:
        return "".join(f'    TORCH_CHECK(t{i}.is_cuda(), "t{i} must be a CUDA tensor");\n' for i in range(rng.randint(2, 12)))
    return "    {" + ", ".join(f"{rng.random():.3f}f" for _ in range(8)) + "},\n"


def legit_solution(rng: random.Random) -> str:
    base = rng.choice(SOLUTIONS)
    # Splice legitimate repetition inside the kernel source / code, in comments so it stays valid python.
    lines = base.splitlines(keepends=True)
    at = rng.randrange(len(lines))
    insert = "".join("# " + line if line.strip() else line for line in legit_repetition(rng).splitlines(keepends=True))
    return "".join(lines[:at]) + insert + "".join(lines[at:])


def legit_answer(rng: random.Random) -> tuple[str, str, str]:
    """(raw, answer part, code)."""
    code = legit_solution(rng)
    answer = prose(rng, rng.randint(0, 4)) + "\n```python\n" + code + "```\n"
    if rng.random() < 0.5:
        answer += "\n" + prose(rng, rng.randint(1, 3))
    if rng.random() < 0.3:
        answer += "\nUsage:\n\n```python\nmodel = ModelNew()\n```\n"
    head = rng.choice(["", "<think>\n\n</think>\n\n", "<think>\n" + prose(rng, 6) + "</think>\n\n"])
    # After </think> the cleaned answer starts at the first non-blank character.
    return head + answer, answer.lstrip() if head else answer, code


@pytest.mark.parametrize("seed", range(150))
def test_legit_answers_come_through_byte_for_byte(seed: int):
    raw, answer, code = legit_answer(random.Random(seed))
    result = clean_response(raw)
    assert not result.degenerate, result.warnings
    assert result.cleaned == answer
    assert result.code == code
    assert result.truncated_at is None and result.chars_removed == 0


def loop_unit(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.choice(["```python\n", "```\n", "```py\n", "```python\n```\n", "```\n```\n", "```cpp\n"])
    if kind == 1:
        return rng.choice(["\n", " ", "\t", " \n", "\n\n"])
    if kind == 2:
        return rng.choice(SENTENCES) + " "
    if kind == 3:
        return "    " + rng.choice(["x = x + 1", "acc += a[i] * b[i];", "out = self.conv(out)"]) + "\n"
    if kind == 4:
        return "".join(f"    step_{rng.randint(0, 99)}(x, {rng.randint(0, 9)});\n" for _ in range(rng.randint(2, 10)))
    if kind == 5:
        return prose(rng, rng.randint(3, 8)) + "\n"
    return rng.choice(["the ", "memory ", "and then ", "Wait, "])


def primitive_period(unit: str) -> int:
    for q in range(1, len(unit) + 1):
        if len(unit) % q == 0 and unit[:q] * (len(unit) // q) == unit:
            return q
    return len(unit)


def earliest_start(text: str, start: int, period: int) -> int:
    while start > 0 and text[start - 1] == text[start - 1 + period]:
        start -= 1
    return start


@pytest.mark.parametrize("seed", range(150))
def test_loops_after_any_answer_are_cut_at_their_first_unit(seed: int):
    rng = random.Random(10_000 + seed)
    raw_prefix, _, _ = legit_answer(rng)
    raw_prefix += prose(rng, rng.randint(0, 2))
    unit = loop_unit(rng)
    period = primitive_period(unit)
    if period > SETTINGS.max_period:
        pytest.skip("unit longer than max_period")
    minimum = max(SETTINGS.min_loop_chars(period), SETTINGS.min_junk_lines * 2)
    repeats = -(-minimum // len(unit)) + rng.randint(0, 200)
    raw = raw_prefix + unit * repeats

    result = clean_response(raw)
    assert result.degenerate
    assert result.period == period
    loop_start = result.truncated_at - period
    # At the unit's first occurrence: never later than one unit after the prefix,
    # never earlier than where the periodic stretch really begins.
    assert earliest_start(raw, len(raw_prefix), period) <= loop_start <= len(raw_prefix) + period
    kept = raw[split_thinking(raw).answer_start:result.truncated_at]
    assert result.cleaned.startswith(kept) and result.cleaned[len(kept):] in ("", "```", "\n```")

    streamed = StreamingLoopDetector()
    pos = 0
    while pos < len(raw) and streamed.detection is None:
        size = rng.randint(1, 20)
        streamed.feed(raw[pos:pos + size])
        pos += size
    batch = detect_loop(raw)
    assert streamed.detection is not None and streamed.detection.period == batch.period
    assert batch.start <= streamed.detection.start < batch.start + batch.period
