"""Prompts: turn 0 from the problem, turn k from the stored conversation and feedback. Pure."""
from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are an expert in writing high-performance custom kernels for PyTorch. You replace PyTorch "
    "operators with faster custom kernels while keeping the results numerically identical."
)

BACKEND_INSTRUCTIONS = {
    "cuda": (
        "Write the kernels in CUDA C++ and compile them inline with `torch.utils.cpp_extension.load_inline` "
        "(pass the CUDA source as `cuda_sources`, the C++ declarations as `cpp_sources`, and list the "
        "exported `functions`). Launch your kernels from `ModelNew.forward`."
    ),
    "triton": (
        "Write the kernels in Triton (`import triton`, `import triton.language as tl`, `@triton.jit`) and "
        "launch them from `ModelNew.forward` with an explicit grid."
    ),
    "cpp": (
        "The code runs on the CPU. Write the kernels in C++ and compile them inline with "
        "`torch.utils.cpp_extension.load_inline` (pass the source as `cpp_sources` and list the exported "
        "`functions`). Operate on raw data pointers of contiguous tensors; launch your kernels from "
        "`ModelNew.forward`."
    ),
}

OMITTED_ATTEMPT = "[An earlier attempt, omitted to fit the context. Its feedback follows.]"


@dataclass(frozen=True)
class PastTurn:
    """What a later prompt needs of an earlier turn: its answer without reasoning, and its feedback."""

    answer: str
    feedback: str


def first_turn_messages(reference_source: str, backend: str) -> list[dict[str, str]]:
    user = (
        "You are given the following PyTorch reference architecture:\n\n"
        f"```python\n{reference_source.strip()}\n```\n\n"
        f"{BACKEND_INSTRUCTIONS[backend]}\n\n"
        "Replace the PyTorch operators with custom kernels to get a speedup. Name the optimized "
        "architecture `ModelNew`: same constructor arguments and the same forward() signature and outputs "
        "as `Model`. Output the complete new architecture in ONE Python code block (```python ... ```): "
        "the imports, the kernel sources, and the `ModelNew` class. Do not write testing code and do not "
        "repeat the code block."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def build_messages(reference_source: str, backend: str, history: list[PastTurn], max_chars: int,
                   first: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """The conversation for the next turn, within `max_chars` of content: `first` (a dataset's own
    turn-0 prompt) or kturn's, then each earlier answer and its feedback.

    The oldest attempts' answers are dropped first; the problem and every feedback message stay.
    """
    messages = [dict(m) for m in first] if first else first_turn_messages(reference_source, backend)
    opening = len(messages)
    for past in history:
        messages.append({"role": "assistant", "content": past.answer})
        messages.append({"role": "user", "content": past.feedback})
    answer_positions = [opening + 2 * i for i in range(len(history))]
    for position in answer_positions[:-1]:
        if _size(messages) <= max_chars:
            break
        messages[position] = {"role": "assistant", "content": OMITTED_ATTEMPT}
    if _size(messages) > max_chars and answer_positions:
        last = answer_positions[-1]
        overflow = _size(messages) - max_chars
        answer = messages[last]["content"]
        messages[last] = {"role": "assistant", "content": answer[: max(len(answer) - overflow - 60, 0)] + "\n[... rest omitted to fit the context]"}
    return messages


def _size(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)
