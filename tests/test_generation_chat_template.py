"""render_chatml against hand-written Qwen3 prompts (checked once against the real Jinja template)."""

import pytest

from workers.generation import render_chatml

CONVERSATION = [
    {"role": "user", "content": "Write a ReLU kernel."},
    {"role": "assistant", "content": "<think>\nUse max(x, 0).\n</think>\n\n```python\nrelu\n```"},
    {"role": "user", "content": "It failed to compile."},
]

EXPECTED_HISTORY = (
    "<|im_start|>user\nWrite a ReLU kernel.<|im_end|>\n"
    "<|im_start|>assistant\n```python\nrelu\n```<|im_end|>\n"  # reasoning dropped
    "<|im_start|>user\nIt failed to compile.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_thinking_off_appends_empty_think_block():
    assert render_chatml(CONVERSATION, enable_thinking=False) == EXPECTED_HISTORY + "<think>\n\n</think>\n\n"


def test_thinking_on_ends_at_the_assistant_line():
    assert render_chatml(CONVERSATION, enable_thinking=True) == EXPECTED_HISTORY


def test_system_message_and_answer_without_reasoning_are_kept_verbatim():
    messages = [
        {"role": "system", "content": "You write CUDA kernels."},
        {"role": "user", "content": "Go."},
        {"role": "assistant", "content": "plain answer"},
        {"role": "user", "content": "Again."},
    ]
    assert render_chatml(messages, enable_thinking=True) == (
        "<|im_start|>system\nYou write CUDA kernels.<|im_end|>\n"
        "<|im_start|>user\nGo.<|im_end|>\n"
        "<|im_start|>assistant\nplain answer<|im_end|>\n"
        "<|im_start|>user\nAgain.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_consecutive_turn_prompts_share_a_prefix_up_to_the_previous_answer():
    # Why prefix caching pays off: turn k+1's prompt starts with turn k's prompt minus the think block.
    turn0 = render_chatml(CONVERSATION[:1], enable_thinking=False)
    turn1 = render_chatml(CONVERSATION, enable_thinking=False)
    assert turn1.startswith(turn0.removesuffix("<think>\n\n</think>\n\n"))


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "tool", "content": "x"}], [{"role": "user", "content": [{"type": "text", "text": "x"}]}]],
)
def test_invalid_messages_raise(messages):
    with pytest.raises(ValueError):
        render_chatml(messages, enable_thinking=False)
