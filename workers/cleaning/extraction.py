"""Pick the python solution (the block defining `class ModelNew`) out of an answer.

The answer given here has no reasoning left in it, so fences written while
thinking never compete. Rules, in order:

* the last *closed* python block (tag python/py/none) that defines ModelNew;
  a usage example after the solution does not define it and is skipped;
* else the last unclosed one (generation stopped inside the solution);
* no fences at all: the answer itself, from its first line of code, when it
  defines ModelNew (bare code);
* C/C++/CUDA blocks (```cpp, ```cuda, ```c++, ...) go to extra_sources: some
  answers put the kernel source in its own block next to the python one.
"""

from __future__ import annotations

import ast
import re
import warnings as _warnings
from dataclasses import dataclass, field

from .markdown import FencedBlock, iter_fenced_blocks
from .settings import CleaningSettings

PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3", "ipython", "pytorch", "triton"})
NATIVE_TAGS = frozenset({"cpp", "c++", "cuda", "cu", "cuh", "c", "cc", "cxx", "h", "hpp"})

# Anchored at line start with no nested quantifiers: linear, no backtracking blow-up.
_DEFINES_MODEL_NEW = re.compile(r"^[ \t]*class[ \t]+ModelNew\b", re.MULTILINE)
_CODE_LINE_START = re.compile(r"^(?:import |from |class |def |@|#)", re.MULTILINE)
_MAX_TRIM_ATTEMPTS = 20

NO_CODE_BLOCK = "no code block"
NO_MODEL_NEW = "no block defines ModelNew"
EMPTY_CODE_BLOCK = "empty code block"
EMPTY_ANSWER = "empty answer"
ONLY_REASONING = "answer is only reasoning"


@dataclass(frozen=True)
class CodeExtraction:
    code: str | None
    no_code_reason: str | None
    extra_sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def defines_model_new(code: str) -> bool:
    return _DEFINES_MODEL_NEW.search(code) is not None


def extract_code(answer: str, settings: CleaningSettings) -> CodeExtraction:
    if not answer.strip():
        return CodeExtraction(None, EMPTY_ANSWER)
    blocks = iter_fenced_blocks(answer)
    if not blocks:
        return _bare_code(answer, settings)
    extra_sources = [b.content for b in blocks if b.lang in NATIVE_TAGS and b.content.strip()]
    python_blocks = [b for b in blocks if b.lang in PYTHON_TAGS]
    solutions = [b for b in python_blocks if defines_model_new(b.content)]
    if not solutions:
        reason = EMPTY_CODE_BLOCK if all(not b.content.strip() for b in blocks) else NO_MODEL_NEW
        return CodeExtraction(None, reason, extra_sources)
    chosen = _last_closed_or_last(solutions)
    notes = _selection_notes(chosen, solutions, python_blocks)
    notes += _syntax_notes(chosen.content, settings)
    return CodeExtraction(chosen.content, None, extra_sources, notes)


def _last_closed_or_last(solutions: list[FencedBlock]) -> FencedBlock:
    closed = [b for b in solutions if b.closed]
    return closed[-1] if closed else solutions[-1]


def _selection_notes(chosen: FencedBlock, solutions: list[FencedBlock], python_blocks: list[FencedBlock]) -> list[str]:
    notes = []
    if not chosen.closed:
        notes.append("code block is not closed (generation stopped inside it)")
    if len(solutions) > 1:
        notes.append(f"{len(solutions)} blocks define ModelNew; took the last complete one")
    solution_ids = {id(b) for b in solutions}  # identity: comparing dataclasses would compare contents
    others = sum(1 for b in python_blocks if id(b) not in solution_ids and b.content.strip())
    if others:
        notes.append(f"ignored {others} other python block(s)")
    return notes


def _bare_code(answer: str, settings: CleaningSettings) -> CodeExtraction:
    model_new = _DEFINES_MODEL_NEW.search(answer)
    if model_new is None:
        return CodeExtraction(None, NO_CODE_BLOCK)
    first = _CODE_LINE_START.search(answer, 0, model_new.start() + 1)
    code = answer[first.start() if first else model_new.start():]
    code = _drop_trailing_prose(code, model_new.end() - (len(answer) - len(code)), settings)
    notes = ["code is not fenced (bare code answer)"] + _syntax_notes(code, settings)
    return CodeExtraction(code, None, [], notes)


def _drop_trailing_prose(code: str, model_new_end: int, settings: CleaningSettings) -> str:
    """Bare code is often followed by an explanation; cut at the last blank line that leaves valid python."""
    if len(code) > settings.max_syntax_check_chars or _parses(code):
        return code
    cut = len(code)
    for _ in range(_MAX_TRIM_ATTEMPTS):
        cut = code.rfind("\n\n", model_new_end, cut)
        if cut < 0:
            break
        if _parses(code[:cut + 1]):
            return code[:cut + 1]
    return code


def _parses(code: str) -> bool:
    return _syntax_error(code) is None


def _syntax_error(code: str) -> str | None:
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")  # invalid escape sequences in kernels are common and harmless
            ast.parse(code)
    except SyntaxError as error:
        return f"{error.msg} (line {error.lineno})"
    except (ValueError, RecursionError, MemoryError) as error:
        return str(error) or type(error).__name__
    return None


def _syntax_notes(code: str, settings: CleaningSettings) -> list[str]:
    if len(code) > settings.max_syntax_check_chars:
        return ["code too long to syntax-check"]
    error = _syntax_error(code)
    return [f"code does not parse: {error}"] if error else []
