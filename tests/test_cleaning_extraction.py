"""Fence parsing, fence repair, <think> split and ModelNew extraction."""

from __future__ import annotations

import pytest

from workers.cleaning import CleaningSettings, clean_response
from workers.cleaning.extraction import extract_code
from workers.cleaning.markdown import close_open_fence, iter_fenced_blocks
from workers.cleaning.thinking import split_thinking

SETTINGS = CleaningSettings()
MODEL = "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
HELPER = "def helper(x):\n    return x + 1\n"


def block(code: str, lang: str = "python") -> str:
    return f"```{lang}\n{code}```\n"


# --- fences -------------------------------------------------------------------


def test_blocks_with_and_without_language_and_unclosed():
    text = "intro\n" + block("a = 1\n") + "mid\n" + block("b = 2\n", "") + "```cpp\nint x;\n"
    blocks = iter_fenced_blocks(text)
    assert [(b.lang, b.content, b.closed) for b in blocks] == [
        ("python", "a = 1\n", True),
        ("", "b = 2\n", True),
        ("cpp", "int x;\n", False),
    ]
    assert text[blocks[0].start:blocks[0].end] == "```python\na = 1\n```\n"


def test_fence_like_lines_inside_a_block_are_content():
    text = "```python\nx = 1\n```python\ny = 2\n```\n"
    [only] = iter_fenced_blocks(text)
    assert only.content == "x = 1\n```python\ny = 2\n" and only.closed


def test_inline_backticks_are_not_fences():
    text = "Use ```python fences``` like this.\n" + block("z = 3\n")
    assert [b.content for b in iter_fenced_blocks(text)] == ["z = 3\n"]


def test_longer_fences_need_a_longer_close():
    text = "````markdown\n```python\nx\n```\n````\n"
    [outer] = iter_fenced_blocks(text)
    assert outer.lang == "markdown" and outer.content == "```python\nx\n```\n"


def test_indented_fences_and_trailing_spaces_on_the_close():
    text = "1. step\n   ```python\n   x = 1\n   ```  \n"
    [only] = iter_fenced_blocks(text)
    assert only.closed and only.content == "   x = 1\n"


def test_close_open_fence_only_appends():
    assert close_open_fence("a\n```python\nx = 1\n") == ("a\n```python\nx = 1\n```", True)
    assert close_open_fence("a\n```python\nx = 1") == ("a\n```python\nx = 1\n```", True)
    assert close_open_fence("````py\nx\n") == ("````py\nx\n````", True)
    closed = "a\n" + block("x = 1\n")
    assert close_open_fence(closed) == (closed, False)
    assert close_open_fence("no fences") == ("no fences", False)


def test_a_line_of_thousands_of_backticks_is_cheap():
    text = "`" * 200_000 + "\n" + block("x = 1\n")
    assert len(iter_fenced_blocks(text)) >= 1


# --- reasoning split --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, thinking, answer, only_reasoning",
    [
        ("<think>\nplan\n</think>\n\nanswer", "\nplan\n", "answer", False),
        ("  <think>plan</think>answer", "plan", "answer", False),
        ("<think>\n\n</think>\n\nanswer", "\n\n", "answer", False),
        ("<think>\nstill thinking", "\nstill thinking", "", True),
        ("plan from a template-opened block\n</think>\n\nanswer", "plan from a template-opened block\n", "answer", False),
        ("just an answer", None, "just an answer", False),
        ("answer mentioning <think> and </think> tags", None, "answer mentioning <think> and </think> tags", False),
    ],
)
def test_split_thinking(raw, thinking, answer, only_reasoning):
    split = split_thinking(raw)
    got_thinking = raw[split.reasoning_start:split.reasoning_end] if split.has_reasoning else None
    assert got_thinking == thinking
    assert raw[split.answer_start:] == answer
    assert split.only_reasoning is only_reasoning


def test_empty_think_gives_empty_string_and_no_think_gives_none():
    assert clean_response("<think>\n\n</think>\n\n" + block(MODEL)).thinking == ""
    assert clean_response(block(MODEL)).thinking is None


def test_unclosed_think_is_all_reasoning():
    result = clean_response("<think>\nLet me write it:\n" + block(MODEL))
    assert (result.cleaned, result.code, result.no_code_reason) == ("", None, "answer is only reasoning")
    assert "class ModelNew" in result.thinking


def test_fences_inside_reasoning_are_ignored():
    raw = "<think>\n" + block(MODEL) + "</think>\n\nI could not finish the solution.\n"
    result = clean_response(raw)
    assert result.code is None and result.no_code_reason == "no code block"


# --- code extraction ----------------------------------------------------------------


def test_model_new_block_beats_a_later_usage_example():
    answer = block(MODEL) + "Usage:\n" + block("model = ModelNew()\nprint(model(torch.ones(2)))\n")
    assert extract_code(answer, SETTINGS).code == MODEL


def test_last_complete_model_new_block_wins_over_an_unclosed_one():
    final = MODEL.replace("x * 2", "x * 3")
    answer = block(MODEL) + block(final) + "```python\n" + MODEL.replace("x * 2", "x * 4")
    extraction = extract_code(answer, SETTINGS)
    assert extraction.code == final


def test_unclosed_final_block_is_used_when_it_is_the_only_one():
    extraction = extract_code("Code:\n```python\n" + MODEL, SETTINGS)
    assert extraction.code == MODEL
    assert any("not closed" in w for w in extraction.warnings)


def test_unclosed_block_ending_in_fence_junk_keeps_it_and_warns():
    extraction = extract_code("```python\n" + MODEL + "```python\n", SETTINGS)
    assert extraction.code == MODEL + "```python\n"
    assert any("does not parse" in w for w in extraction.warnings)


@pytest.mark.parametrize("tag", ["py", "python3", "Python", ""])
def test_python_tag_variants(tag: str):
    assert extract_code(block(MODEL, tag), SETTINGS).code == MODEL


@pytest.mark.parametrize("tag", ["cpp", "cuda", "c++", "cu"])
def test_native_blocks_go_to_extra_sources(tag: str):
    kernel = "__global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n"
    answer = block(kernel, tag) + "\n" + block(MODEL)
    extraction = extract_code(answer, SETTINGS)
    assert extraction.code == MODEL and extraction.extra_sources == [kernel]


def test_bare_code_without_fences():
    answer = "Here it is:\n\n" + MODEL + "\nThis doubles the input.\n"
    extraction = extract_code(answer, SETTINGS)
    assert extraction.code == MODEL
    assert any("not fenced" in w for w in extraction.warnings)


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty answer"),
        ("Only words, no code.\n", "no code block"),
        (block(HELPER), "no block defines ModelNew"),
        (block(MODEL, "bash"), "no block defines ModelNew"),
        ("```python\n```\n", "empty code block"),
        ("```python\n", "empty code block"),
    ],
)
def test_no_code_reasons(answer: str, reason: str):
    extraction = extract_code(answer, SETTINGS)
    assert extraction.code is None and extraction.no_code_reason == reason


def test_model_new_must_be_a_class_definition():
    answer = block("model = ModelNew()\n# class ModelNew is defined elsewhere\n")
    assert extract_code(answer, SETTINGS).no_code_reason == "no block defines ModelNew"


def test_syntax_errors_are_reported_not_fatal():
    broken = MODEL + "    def oops(:\n"
    extraction = extract_code(block(broken), SETTINGS)
    assert extraction.code == broken
    assert any(w.startswith("code does not parse") for w in extraction.warnings)
