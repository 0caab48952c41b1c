"""clean_response: reasoning split -> loop truncation -> markdown repair -> code extraction.

Guarantees:
* an answer without a loop comes out byte for byte (after the reasoning split);
* text before a loop is never altered; the first whole unit of the loop is kept
  and everything after it is dropped; only a fence left open by the cut is
  closed (appended, never rewritten);
* loops are searched where they hurt: in the answer, or in the reasoning when
  the reasoning never closed (then it is the whole response). A loop inside a
  closed <think> is reported as a warning only: the answer that follows is
  what gets evaluated.

Conventions: `thinking` is the reasoning with surrounding whitespace stripped;
None when the response has no <think> block, "" for an empty one (Qwen3 with
thinking disabled emits "<think>\\n\\n</think>\\n\\n"). `cleaned` starts at the
first non-blank character after </think>.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from .extraction import ONLY_REASONING, CodeExtraction, extract_code
from .markdown import close_open_fence
from .repetition import DEFAULT_SETTINGS, Repetition, find_loop
from .settings import CleaningSettings
from .thinking import ThinkingSplit, split_thinking
from .truncation import cut_offset

logger = logging.getLogger("kturn.cleaning")


@dataclass(frozen=True)
class CleanResult:
    cleaned: str
    thinking: str | None
    code: str | None
    degenerate: bool
    severity: float
    period: int | None
    repeats: int
    covered: float
    truncated_at: int | None
    chars_removed: int
    no_code_reason: str | None
    extra_sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def clean_response(raw: str, settings: CleaningSettings = DEFAULT_SETTINGS) -> CleanResult:
    """Clean one raw model response (see the module docstring for the guarantees)."""
    logger.info("Generated response: %d chars", len(raw))
    split = split_thinking(raw)
    warnings: list[str] = []
    if split.only_reasoning:
        loop = find_loop(raw, split.reasoning_start, split.reasoning_end, settings)
    else:
        loop = find_loop(raw, split.answer_start, len(raw), settings)
        warnings += _reasoning_loop_warnings(raw, split, settings)
    cut = cut_offset(loop.start, loop.period) if loop else None
    if loop:
        warnings.append(f"{loop.kind} loop of {loop.repeats} x {loop.period} chars truncated at offset {cut}")
    cleaned, thinking, extraction = _split_and_extract(raw, split, cut, settings)
    if cut is not None:
        cleaned, closed = close_open_fence(cleaned)
        if closed:
            warnings.append("closed the code fence left open by the truncation")
    result = _result(raw, loop, cut, cleaned, thinking, extraction, warnings, settings)
    _log(result, loop, settings)
    return result


def _split_and_extract(
    raw: str, split: ThinkingSplit, cut: int | None, settings: CleaningSettings
) -> tuple[str, str | None, CodeExtraction]:
    if split.only_reasoning:
        end = split.reasoning_end if cut is None else cut
        return "", raw[split.reasoning_start:end].strip(), CodeExtraction(None, ONLY_REASONING)
    thinking = raw[split.reasoning_start:split.reasoning_end].strip() if split.has_reasoning else None
    answer = raw[split.answer_start:len(raw) if cut is None else cut]
    # Extract before the fence repair so an unclosed solution block is reported as such.
    return answer, thinking, extract_code(answer, settings)


def _reasoning_loop_warnings(raw: str, split: ThinkingSplit, settings: CleaningSettings) -> list[str]:
    if not split.has_reasoning:
        return []
    loop = find_loop(raw, split.reasoning_start, split.reasoning_end, settings)
    if loop is None:
        return []
    return [f"loop inside closed reasoning: {loop.repeats} x {loop.period} chars at offset {loop.start} (kept)"]


def _result(
    raw: str,
    loop: Repetition | None,
    cut: int | None,
    cleaned: str,
    thinking: str | None,
    extraction: CodeExtraction,
    warnings: list[str],
    settings: CleaningSettings,
) -> CleanResult:
    covered = loop.covered(len(raw)) if loop else 0.0
    return CleanResult(
        cleaned=cleaned,
        thinking=thinking,
        code=extraction.code,
        degenerate=loop is not None,
        severity=settings.severity(covered, loop.repeats) if loop else 0.0,
        period=loop.period if loop else None,
        repeats=loop.repeats if loop else 0,
        covered=covered,
        truncated_at=cut,
        chars_removed=len(raw) - cut if cut is not None else 0,
        no_code_reason=extraction.no_code_reason,
        extra_sources=list(extraction.extra_sources),
        warnings=warnings + list(extraction.warnings),
    )


def _log(result: CleanResult, loop: Repetition | None, settings: CleaningSettings) -> None:
    if loop is not None:
        severe = result.severity >= settings.severe_threshold
        logger.log(
            logging.WARNING if severe else logging.INFO,
            "%s repetition: severity=%.2f period=%d repeats=%d covered=%.2f kind=%s start=%d",
            "Severe" if severe else "Mild",
            result.severity, loop.period, loop.repeats, result.covered, loop.kind, loop.start,
        )
    if result.truncated_at is not None:
        logger.info("Truncated at offset %d: %d chars removed", result.truncated_at, result.chars_removed)
    if result.code is None:
        logger.info("No code: %s", result.no_code_reason)
