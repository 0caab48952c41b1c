"""Generation from recorded answers: deterministic runs without a GPU.

The file is JSONL, one answer per line:
    {"problem": "level1/1_ReLU", "turn": 0, "sample": 0, "text": "...",
     "finish_reason": {"type": "stop", "matched": 151645}}
`sample` is optional (an entry without it answers every sample of that turn);
`finish_reason` defaults to a normal end of turn (<|im_end|>, token 151645).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from workers.generation.backend import GenerationError
from workers.generation.request import GenerationRequest, GenerationResult

IM_END_TOKEN_ID = 151645
DEFAULT_FINISH_REASON: dict[str, Any] = {"type": "stop", "matched": IM_END_TOKEN_ID}

# (problem, turn, sample); sample None means "any sample"
_Key = tuple[str, int, int | None]


def _parse_line(line: str, where: str) -> tuple[_Key, dict[str, Any]]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    problem, turn, sample, text = entry.get("problem"), entry.get("turn"), entry.get("sample"), entry.get("text")
    if not isinstance(problem, str) or not problem:
        raise ValueError(f"{where}: 'problem' must be a non-empty string")
    if not isinstance(turn, int) or isinstance(turn, bool):
        raise ValueError(f"{where}: 'turn' must be an integer")
    if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool)):
        raise ValueError(f"{where}: 'sample' must be an integer when given")
    if not isinstance(text, str):
        raise ValueError(f"{where}: 'text' must be a string")
    finish_reason = entry.get("finish_reason", DEFAULT_FINISH_REASON)
    if not (isinstance(finish_reason, dict) and "type" in finish_reason):
        raise ValueError(f"{where}: 'finish_reason' must be an object with a 'type'")
    return (problem, turn, sample), {"text": text, "finish_reason": finish_reason}


def load_replay_file(path: str | Path) -> dict[_Key, dict[str, Any]]:
    """Index a replay JSONL file; ValueError names the file and line of any bad entry."""
    answers: dict[_Key, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            key, answer = _parse_line(line, where)
            # Two answers for the same key would make replays depend on file order.
            if key in answers:
                raise ValueError(f"{where}: duplicate entry for problem={key[0]!r} turn={key[1]} sample={key[2]}")
            answers[key] = answer
    return answers


class ReplayBackend:
    name = "replay"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._answers = load_replay_file(path)  # once per instance: workers reuse the backend

    def generate(self, request: GenerationRequest, abort: object = None) -> GenerationResult:
        # Answers are at hand at once: there is never anything running to abort.
        started = time.monotonic()
        answer = self._lookup(request.problem_key, request.turn_index, request.sample_index)
        return GenerationResult(
            text=answer["text"],
            finish_reason=dict(answer["finish_reason"]),  # a copy: callers must not alter the index
            prompt_tokens=None,
            completion_tokens=None,
            cached_tokens=None,
            output_ids=None,
            latency_s=time.monotonic() - started,
            backend=self.name,
            prompt_text=None,  # nothing was sent to a model
        )

    def _lookup(self, problem: str, turn: int, sample: int) -> dict[str, Any]:
        answer = self._answers.get((problem, turn, sample)) or self._answers.get((problem, turn, None))
        if answer is None:
            raise GenerationError(
                f"replay file {self.path} has no answer for problem {problem!r} turn {turn} "
                f"(sample {sample}, nor an entry without 'sample')"
            )
        return answer
