"""Qwen3's chat template (ChatML), rendered in Python.

We render the prompt ourselves and send it as `text` to SGLang's native
/generate, so the exact prompt is known, stored for provenance, and identical
from turn to turn (which keeps SGLang's prefix cache hitting).
Mirrors the Jinja template shipped with Qwen3 (add_generation_prompt=True) for
system/user/assistant conversations; tools are not supported.
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant")
THINK_START, THINK_END = "<think>", "</think>"
# What Qwen3's template appends after the generation prompt when enable_thinking=False:
# an empty reasoning block, so the model answers directly.
EMPTY_THINK_BLOCK = "<think>\n\n</think>\n\n"


def _split_reasoning(content: str) -> tuple[str, str]:
    """(reasoning, answer) exactly as Qwen3's template splits an assistant message."""
    if THINK_END not in content:
        return "", content
    reasoning = content.split(THINK_END)[0].rstrip("\n").split(THINK_START)[-1].lstrip("\n")
    return reasoning, content.split(THINK_END)[-1].lstrip("\n")


def _last_user_index(messages: list[dict[str, str]]) -> int:
    # The template's `ns.last_query_index`: defaults to the last message when there is no user turn.
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    return users[-1] if users else len(messages) - 1


def _assistant_body(content: str, keeps_reasoning: bool, is_last: bool) -> str:
    reasoning, answer = _split_reasoning(content)
    # Answers before the last user turn lose their reasoning (it is not part of the
    # conversation the model sees); only a trailing assistant turn keeps it.
    if keeps_reasoning and (is_last or reasoning):
        reasoning, answer = reasoning.strip("\n"), answer.lstrip("\n")
        return f"{THINK_START}\n{reasoning}\n{THINK_END}\n\n{answer}"
    return answer


def _check_message(message: dict[str, str], index: int) -> None:
    if message.get("role") not in ROLES:
        raise ValueError(f"messages[{index}].role must be one of {ROLES}, got {message.get('role')!r}")
    if not isinstance(message.get("content"), str):
        raise ValueError(f"messages[{index}].content must be a string, got {type(message.get('content')).__name__}")


def render_chatml(messages: list[dict[str, str]], enable_thinking: bool) -> str:
    """The prompt Qwen3 expects for the next assistant answer to `messages`."""
    if not messages:
        raise ValueError("render_chatml needs at least one message")
    last_user = _last_user_index(messages)
    parts = []
    for i, message in enumerate(messages):
        _check_message(message, i)
        role, content = message["role"], message["content"]
        if role == "assistant":
            content = _assistant_body(content, keeps_reasoning=i > last_user, is_last=i == len(messages) - 1)
        parts.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    if not enable_thinking:
        parts.append(EMPTY_THINK_BLOCK)
    return "".join(parts)
