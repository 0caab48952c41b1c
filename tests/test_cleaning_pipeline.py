"""clean_response end to end: truncation, repair, logging, result shape, speed."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest

from workers.cleaning import CleaningSettings, CleanResult, clean_response

MODEL = "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
ANSWER = "Here is the solution:\n\n```python\n" + MODEL + "```\n"


def test_clean_answer_is_returned_byte_for_byte():
    result = clean_response(ANSWER)
    assert result.cleaned == ANSWER
    assert (result.degenerate, result.truncated_at, result.chars_removed, result.warnings) == (False, None, 0, [])
    assert result.code == MODEL


def test_truncation_keeps_the_first_unit_and_reports_offsets():
    raw = ANSWER + "\nI am done. " + "Let me check again. " * 200
    result = clean_response(raw)
    loop_start = raw.index("Let me check again.")
    assert result.truncated_at == loop_start + len("Let me check again. ")
    assert result.cleaned == raw[:result.truncated_at]
    assert result.chars_removed == len(raw) - result.truncated_at
    assert (result.period, result.repeats) == (len("Let me check again. "), 200)
    assert result.covered == pytest.approx((len(raw) - loop_start) / len(raw))
    assert result.code == MODEL


def test_cut_inside_a_block_closes_the_fence():
    raw = "```python\n" + MODEL + "        x = x + 1\n" * 300
    result = clean_response(raw)
    assert result.cleaned == "```python\n" + MODEL + "        x = x + 1\n```"
    assert result.code == MODEL + "        x = x + 1\n"
    assert any("closed the code fence" in w for w in result.warnings)


def test_repair_only_after_a_cut():
    raw = "```python\n" + MODEL  # stopped by max tokens, no loop
    assert clean_response(raw).cleaned == raw


def test_loop_in_unclosed_think_truncates_the_reasoning():
    raw = "<think>\nFirst idea. " + "Hmm, let me think. " * 300
    result = clean_response(raw)
    assert result.degenerate and result.cleaned == "" and result.code is None
    assert result.thinking == "First idea. Hmm, let me think."
    assert result.truncated_at == len("<think>\nFirst idea. Hmm, let me think. ")


def test_loop_in_closed_reasoning_only_warns():
    reasoning = "Plan. " + "Check the grid. " * 100
    raw = f"<think>\n{reasoning}\n</think>\n\n{ANSWER}"
    result = clean_response(raw)
    assert not result.degenerate and result.truncated_at is None
    assert result.thinking == reasoning.strip() and result.cleaned == ANSWER
    assert any("loop inside closed reasoning" in w for w in result.warnings)


def test_as_dict_has_every_field_and_is_json():
    result = clean_response("<think>x</think>\n" + ANSWER + "```\n" * 300)
    data = result.as_dict()
    assert set(data) == {f.name for f in dataclasses.fields(CleanResult)}
    assert json.loads(json.dumps(data)) == data
    assert data["degenerate"] is True and data["thinking"] == "x"


def test_result_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        clean_response(ANSWER).cleaned = ""  # type: ignore[misc]


def test_settings_change_the_verdict():
    raw = ANSWER + "    acc += 1;\n" * 12
    assert not clean_response(raw).degenerate
    assert clean_response(raw, CleaningSettings(min_repeats=10, min_covered_chars=100)).degenerate


# --- logging ------------------------------------------------------------------------


def test_log_lines_an_operator_can_grep(caplog):
    raw = ANSWER + "```python\n" * 500
    with caplog.at_level(logging.INFO, logger="kturn.cleaning"):
        result = clean_response(raw)
    messages = [r.getMessage() for r in caplog.records if r.name == "kturn.cleaning"]
    assert f"Generated response: {len(raw)} chars" in messages
    severe = [m for m in messages if m.startswith("Severe repetition")]
    assert len(severe) == 1
    assert f"severity={result.severity:.2f}" in severe[0] and "period=10" in severe[0] and "repeats=500" in severe[0]
    assert f"Truncated at offset {result.truncated_at}: {result.chars_removed} chars removed" in messages
    assert any(r.levelno == logging.WARNING for r in caplog.records if r.getMessage().startswith("Severe"))


def test_small_loop_is_logged_as_mild(caplog):
    body = "".join(f"Line {i} of a long explanation.\n" for i in range(300))
    with caplog.at_level(logging.INFO, logger="kturn.cleaning"):
        result = clean_response(ANSWER + body + "again. " * 40)
    assert result.degenerate and result.severity < CleaningSettings().severe_threshold
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Mild repetition") for m in messages)
    assert not any(m.startswith("Severe repetition") for m in messages)


def test_clean_answer_logs_no_repetition(caplog):
    with caplog.at_level(logging.INFO, logger="kturn.cleaning"):
        clean_response(ANSWER)
    assert not any("repetition" in r.getMessage() or "Truncated" in r.getMessage() for r in caplog.records)


# --- speed (the benchmark measures; this only guards against quadratic blow-ups) ---------


def _normal_text(chars: int) -> str:
    lines, size, i = [], 0, 0
    while size < chars:
        line = f"    out_{i} = torch.relu(x_{i * 7 % 1013}) * {i * 0.37:.2f}  # step {i}"
        lines.append(line)
        size += len(line) + 1
        i += 1
    return ANSWER + "```python\n" + "\n".join(lines) + "\n```\n"


PATHOLOGICAL = {
    "normal": _normal_text,
    "fence loop": lambda n: ANSWER + "n\n" + "```python\n" * (n // 10),
    "newline flood": lambda n: ANSWER + "\n" * n,
    "sentence loop": lambda n: ANSWER + "Let me check again. " * (n // 20),
    "backtick flood": lambda n: ANSWER + "`" * n,
}


@pytest.mark.parametrize("shape", PATHOLOGICAL)
def test_time_grows_linearly(shape: str):
    make = PATHOLOGICAL[shape]
    small, large = make(250_000), make(1_000_000)

    def best(text: str) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            clean_response(text)
            times.append(time.perf_counter() - started)
        return min(times)

    t_small, t_large = best(small), best(large)
    assert t_large < 0.5, f"{shape}: 1 MB took {t_large:.3f}s"
    assert t_large < 8 * t_small + 0.005
