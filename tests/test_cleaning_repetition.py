"""Loop detection: every loop shape is found, legitimate repetition is not, thresholds hold."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from workers.cleaning import CleaningSettings, detect_loop
from workers.cleaning.periodic import find_first_periodic_loop
from workers.cleaning.repetition import find_loop

SETTINGS = CleaningSettings()
PREFIX = "Here is my reasoning about the kernel launch configuration.\n\n"


def loop_in(text: str, settings: CleaningSettings = SETTINGS):
    return find_loop(text, 0, len(text), settings)


# --- shapes that must be found ------------------------------------------------

LOOP_SHAPES = {
    "python fence with stray n": ("n\n", "```python\n", 300),
    "bare fence": ("", "```\n", 300),
    "fence with other tag": ("", "```cpp\n", 200),
    "empty code block": ("", "```python\n```\n", 200),
    "newline flood": ("", "\n", 500),
    "space flood": ("x = 1", " ", 500),
    "tab-newline flood": ("", "\t\n", 300),
    "repeated sentence": ("", "I need to check the bounds again. ", 100),
    "repeated phrase without punctuation": ("", "and then ", 200),
    "repeated single line": ("", "    x = x + 1\n", 300),
    "multi-line block": ("", "for i in range(4):\n    acc += w[i]\n    out[i] = acc\n", 60),
    "long paragraph": ("", "Let me reconsider. " + "The block size must divide the tile size evenly. " * 4 + "\n", 25),
}


@pytest.mark.parametrize("name", LOOP_SHAPES)
def test_loop_shapes_are_found_at_their_first_unit(name: str):
    before, unit, repeats = LOOP_SHAPES[name]
    prefix = PREFIX + before
    loop = loop_in(prefix + unit * repeats)
    assert loop is not None, name
    assert loop.period == len(unit)
    # The loop starts at the unit's first occurrence (a rotation may start it a bit earlier or later).
    assert abs(loop.start - len(prefix)) <= len(unit)
    assert loop.end == len(prefix) + len(unit) * repeats


def test_fence_loop_is_cut_at_a_whole_line():
    text = PREFIX + "n\n" + "```python\n" * 300
    loop = loop_in(text)
    assert text[loop.start:loop.start + loop.period] == "```python\n"


def test_sentence_loop_unit_starts_at_the_sentence():
    text = "So the fix is easy. " + "Let me recheck the indexing. " * 100
    loop = loop_in(text)
    assert text[loop.start:loop.start + loop.period] == "Let me recheck the indexing. "


def test_word_loop_unit_starts_at_the_word():
    text = "kept in shared " + "memory " * 300
    loop = loop_in(text)
    assert text[loop.start:loop.start + loop.period] == "memory "


def test_irregular_fence_flood_is_a_line_loop():
    rng = random.Random(3)
    lines = ["```python", "```", "```py", "n", ""]
    flood = "".join(rng.choice(lines) + "\n" for _ in range(300))
    text = PREFIX + "```python\n```python\n" + flood
    assert find_first_periodic_loop(text, 0, len(text), SETTINGS) is None  # not periodic
    loop = loop_in(text)
    assert loop is not None and loop.kind == "echo"
    assert loop.start == len(PREFIX)


def test_irregular_whitespace_flood_is_a_junk_line_loop():
    rng = random.Random(4)
    flood = "".join(rng.choice(["", " ", "\t", "  ", " \t", "   "]) + "\n" for _ in range(120))
    prefix = "The kernel is done.\n"
    text = prefix + flood
    assert find_first_periodic_loop(text, 0, len(text), SETTINGS) is None
    loop = loop_in(text)
    assert loop is not None and loop.kind == "junk"
    assert loop.start == len(prefix)


def test_loop_of_period_up_to_max_period():
    unit = "".join(f"line {i}: the quick brown fox jumps\n" for i in range(13))
    unit += "x" * (499 - len(unit)) + "\n"
    assert len(unit) == 500
    loop = loop_in(PREFIX + unit * 10)
    assert loop is not None and loop.period == 500


def test_unit_longer_than_max_period_is_not_searched():
    unit = "".join(f"line {i}: the quick brown fox jumps\n" for i in range(20))
    assert len(unit) > SETTINGS.max_period
    assert loop_in(PREFIX + unit * 10) is None
    wider = dataclasses.replace(SETTINGS, max_period=1024)
    assert loop_in(PREFIX + unit * 10, wider).period == len(unit)


def test_earliest_loop_wins():
    text = PREFIX + "first loop line\n" * 50 + "middle text\n" + "second. " * 200
    loop = loop_in(text)
    assert text[loop.start:loop.start + loop.period] == "first loop line\n"


# --- legitimate repetition ------------------------------------------------------

LEGIT = {
    "sixteen identical lines": "    acc = fmaf(acc, x, 1.0f);\n" * 16,
    "three identical op applications": "        x = self.fused(self.conv(x))\n" * 3,
    "banner": "// " + "=" * 76 + "\n// Kernel\n// " + "=" * 76 + "\n",
    "python banner rule": "# " + "-" * 77 + "\n",
    "unrolled similar lines": "".join(f"        sum += As[ty][{k}] * Bs[{k}][tx];\n" for k in range(16)),
    "define list": "".join(f"#define REG_{i} {i * 4}\n" for i in range(40)),
    "torch checks": "".join(
        f'    TORCH_CHECK({n}.is_cuda(), "{n} must be CUDA");\n    TORCH_CHECK({n}.is_contiguous(), "{n}");\n'
        for n in ("a", "b", "c", "weight", "bias", "out")
    ),
    "constant table": "__constant__ float k[32] = {\n" + "".join(
        f"    {', '.join(f'{(r * 8 + c) * 0.0312:.4f}f' for c in range(8))},\n" for r in range(4)) + "};\n",
    "short zero rows": "    {0.0f, 0.0f, 0.0f, 0.0f},\n" * 4,
    "three blank lines": "a = 1\n\n\n\nb = 2\n",
    "indented block closing": "            }\n        }\n    }\n}\n" * 2,
    "a few empty blocks": "```python\n```\n" * 3,
    "eighty spaces": "x" + " " * 80 + "y\n",
    "thirty blank lines": "end\n" + "\n" * 30 + "next\n",
}


@pytest.mark.parametrize("name", LEGIT)
def test_legit_repetition_is_not_a_loop(name: str):
    assert loop_in(PREFIX + LEGIT[name] + "\nThe end.\n") is None


def test_a_handful_of_identical_lines_is_not_a_loop_but_hundreds_are():
    line = "    x = x * 0.5f + 0.25f;\n"
    assert loop_in(PREFIX + line * 16) is None
    assert loop_in(PREFIX + line * 19) is None
    assert loop_in(PREFIX + line * SETTINGS.min_repeats) is not None
    assert loop_in(PREFIX + line * 300) is not None


def test_floods_need_min_covered_chars():
    assert loop_in(PREFIX + " " * (SETTINGS.min_covered_chars - 1) + "x") is None
    assert loop_in(PREFIX + " " * SETTINGS.min_covered_chars + "x") is not None


# --- settings ---------------------------------------------------------------------


def test_thresholds_are_settings():
    text = PREFIX + "    x = x + 1\n" * 10
    assert loop_in(text) is None
    lenient = CleaningSettings(min_repeats=8, min_covered_chars=100)
    assert lenient.probe_step() < SETTINGS.probe_step()  # probes get denser so short loops are not missed
    assert loop_in(text, lenient) is not None


def test_settings_are_keyword_constructible_and_json_serialisable():
    settings = CleaningSettings(min_repeats=30, severe_threshold=0.7, max_period=256)
    data = dataclasses.asdict(settings)
    assert json.loads(json.dumps(data)) == data
    assert CleaningSettings(**data) == settings


@pytest.mark.parametrize(
    "bad",
    [dict(min_repeats=1), dict(max_period=0), dict(severe_threshold=1.5), dict(gram_chars=500)],
)
def test_nonsense_settings_are_rejected(bad: dict):
    with pytest.raises(ValueError):
        CleaningSettings(**bad)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SETTINGS.min_repeats = 3  # type: ignore[misc]


# --- severity ----------------------------------------------------------------------


def test_severity_is_one_when_the_whole_text_is_a_long_loop():
    detection = detect_loop("```python\n" * 500)
    assert detection.severity == pytest.approx(1.0)
    assert detection.repeats == 500


def test_severity_scales_with_share_and_repeats():
    body = "".join(f"line {i} of a long and perfectly normal answer\n" for i in range(400))
    small_tail = detect_loop(body + "again and again. " * 30)
    big_tail = detect_loop(body + "again and again. " * 3000)
    few_repeats = detect_loop("again and again. " * 25)
    assert 0.0 < small_tail.severity < big_tail.severity <= 1.0
    # Whole text, but only 25 repeats: discounted against full_severity_repeats.
    assert few_repeats.severity == pytest.approx(25 / SETTINGS.full_severity_repeats)


def test_clean_text_has_no_detection():
    assert detect_loop(PREFIX + "Nothing repeats here.\n") is None
    assert detect_loop("") is None
