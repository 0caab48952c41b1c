"""The exact scan's primitives against brute force, on seeded random texts (property style)."""

from __future__ import annotations

import random

import pytest

from workers.cleaning import CleaningSettings
from workers.cleaning.periodic import (
    find_first_periodic_loop,
    first_mismatch_forward,
    periodic_since,
)
from workers.cleaning.truncation import align_unit_start

SETTINGS = CleaningSettings()


def brute_forward(text: str, x: int, p: int, limit: int) -> int:
    e = x
    while e < limit - p and text[e] == text[e + p]:
        e += 1
    return e


def brute_backward(text: str, x: int, p: int, lower: int) -> int:
    a = x
    while a > lower and text[a - 1] == text[a - 1 + p]:
        a -= 1
    return a


def random_text(rng: random.Random, size: int) -> str:
    """Random text over a small alphabet with planted periodic stretches."""
    parts = []
    while sum(map(len, parts)) < size:
        if rng.random() < 0.4:
            unit = "".join(rng.choice("ab\n ") for _ in range(rng.randint(1, 40)))
            parts.append(unit * rng.randint(2, 30) + unit[:rng.randint(0, len(unit))])
        else:
            parts.append("".join(rng.choice("abc \n") for _ in range(rng.randint(1, 200))))
    return "".join(parts)[:size]


@pytest.mark.parametrize("seed", range(40))
def test_extensions_match_brute_force(seed: int):
    rng = random.Random(seed)
    text = random_text(rng, 3000)
    for _ in range(50):
        p = rng.randint(1, 60)
        x = rng.randint(0, len(text) - p)
        assert first_mismatch_forward(text, x, p, len(text)) == brute_forward(text, x, p, len(text))
        lower = rng.randint(0, x)
        assert periodic_since(text, x, p, lower) == brute_backward(text, x, p, lower)


@pytest.mark.parametrize("seed", range(60))
def test_planted_loop_is_found_with_its_exact_extent(seed: int):
    rng = random.Random(1000 + seed)
    words = ["kernel", "tile", "warp", "x", "=", "+", "(", ")", "\n", " ", "float", "acc", ";", "idx"]
    prefix = "".join(rng.choice(words) + rng.choice(" \n") for _ in range(rng.randint(0, 300))) + "|"
    period = rng.choice([1, 2, 3, 7, 10, 33, 64, 99, 100, 150, 300, 512])
    unit = "".join(rng.choice("abcdefgh \n") for _ in range(period))
    if any(unit == (unit[:q] * (period // q + 1))[:period] for q in range(1, period) if period % q == 0):
        unit = unit[:-1] + "Z"  # keep the unit primitive so its period is exactly `period`
    repeats = max(SETTINGS.required_repeats(period), -(-SETTINGS.min_covered_chars // period)) + rng.randint(0, 40)
    suffix = "|" + "".join(rng.choice(words) for _ in range(rng.randint(0, 50)))
    text = prefix + unit * repeats + suffix
    run = find_first_periodic_loop(text, 0, len(text), SETTINGS)
    assert run is not None
    assert run.period == period
    loop_start, loop_end = len(prefix), len(prefix) + period * repeats
    # The maximal run may reach into the neighbours by coincidence, never less than the plant.
    assert run.start == brute_backward(text, loop_start, period, 0)
    assert run.end == brute_forward(text, loop_start, period, len(text)) + period
    assert run.start <= loop_start and run.end >= loop_end


@pytest.mark.parametrize("seed", range(30))
def test_random_text_without_long_runs_has_no_loop(seed: int):
    rng = random.Random(5000 + seed)
    text = "".join(rng.choice("abcdefghij \n") for _ in range(20_000))
    assert find_first_periodic_loop(text, 0, len(text), SETTINGS) is None


@pytest.mark.parametrize("seed", range(30))
def test_aligned_unit_is_a_rotation_inside_the_run(seed: int):
    rng = random.Random(9000 + seed)
    unit = "".join(rng.choice(["abc", " ", ". ", "\n", "x", "def"]) for _ in range(rng.randint(1, 12)))
    text = "start " + unit * 50
    run = find_first_periodic_loop(text, 0, len(text), SETTINGS)
    if run is None:  # very short units need more repeats; nothing to align then
        return
    x = align_unit_start(text, run.start, run.period, run.end)
    assert run.start <= x <= run.start + run.period
    assert x + run.period <= run.end
    rotation = text[x:x + run.period]
    assert rotation in unit * 3  # a rotation of the planted unit (or of its primitive root)
    if "\n" in rotation:
        assert rotation.endswith("\n") and (x == 0 or text[x - 1] == "\n")


def test_probe_never_reads_outside_bounds():
    text = "A" * 50 + "xyz" * 200 + "B" * 50
    lower, upper = 60, 500
    run = find_first_periodic_loop(text, lower, upper, SETTINGS)
    assert run is not None and lower <= run.start and run.end <= upper
