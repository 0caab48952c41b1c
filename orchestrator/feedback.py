"""The text the model sees at the start of its next turn: what happened, then what to do about it.

Built from the stored cleaning figures and the stored evaluation verdict (`EvalResult.as_dict()`),
so it can be rebuilt from the database alone. Pure.
"""
from __future__ import annotations

from typing import Any

FLAG_REASONS = {
    "no_custom_kernel": "it defines no custom kernel: the work is done by PyTorch itself",
    "kernel_never_launched": "a custom kernel is defined but never launched",
    "torch_fallback": "it falls back to PyTorch inside a try/except",
    "calls_reference": "it uses the reference Model instead of its own kernel",
    "torch_compute_ops": "PyTorch compute operations do the work in forward() instead of the custom kernel",
    "threads_or_subprocesses": "it starts threads or subprocesses",
    "timer_tampering": "it tampers with timers",
    "harness_tampering": "it tampers with the evaluation harness (modules, builtins, frames or file descriptors)",
    "monkeypatch_torch": "it monkeypatches torch",
    "cached_results": "it returns cached results instead of computing on the given inputs",
    "uninitialised_output": "it returns memory it never wrote",
    "precision_downgrade": "it computes in lower precision than the reference",
    "input_mutation": "it modifies its inputs",
    "output_aliases_input": "its output aliases one of its inputs",
}

_FASTER = "Make it faster: reduce memory traffic, fuse operations, and choose launch parameters for the hardware."
_ONE_BLOCK = "Reply with ONE complete Python code block that defines the full `ModelNew` class, and nothing repeated."


def bounded(text: str, limit: int) -> str:
    """Keep the head of `text` within `limit` characters, saying what was dropped."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 40, 0)].rstrip() + f"\n[... {len(text) - limit + 40} more characters omitted]"


def cleaning_feedback(degenerate: bool, no_code_reason: str | None) -> str:
    if degenerate:
        return (
            "Your previous answer was cut off after it began repeating itself, so it could not be evaluated.\n"
            f"{_ONE_BLOCK} Do not repeat code fences or lines."
        )
    return f"Your previous answer could not be evaluated: {no_code_reason or 'it contained no code'}.\n{_ONE_BLOCK}"


def no_code_verdict(degenerate: bool, no_code_reason: str | None) -> dict[str, Any]:
    """The evaluation columns of an answer with no code: nothing ran, reward 0."""
    return {"compiled": False, "correct": False, "flags": [], "error_kind": "no_code", "error": no_code_reason,
            "feedback": cleaning_feedback(degenerate, no_code_reason), "reward": 0.0}


def evaluation_feedback(verdict: dict[str, Any], reward: float, limit: int) -> str:
    if verdict.get("disqualified"):
        return _disqualified(verdict, reward, limit)
    if not verdict.get("compiled"):
        return _not_compiled(verdict, limit)
    if not verdict.get("correct"):
        return _incorrect(verdict, limit)
    return _correct(verdict, reward)


def _disqualified(verdict: dict[str, Any], reward: float, limit: int) -> str:
    flag_details = (verdict.get("details") or {}).get("flag_reasons") or {}
    reasons = [_flag_reason(flag, flag_details.get(flag)) for flag in verdict.get("flags", []) if flag in FLAG_REASONS]
    text = "Your previous answer was not rewarded (reward {:.2f}) because {}.".format(reward, "; ".join(reasons or [verdict.get("error") or "a check failed"]))
    return bounded(text, limit) + "\nWrite a real custom kernel that does the computation itself, and launch it from ModelNew.forward. " + _ONE_BLOCK


def _flag_reason(flag: str, specifics: list[str] | None) -> str:
    return f"{FLAG_REASONS[flag]} ({specifics[0]})" if specifics else FLAG_REASONS[flag]


def _not_compiled(verdict: dict[str, Any], limit: int) -> str:
    kind = verdict.get("error_kind")
    if kind == "timeout":
        phase = (verdict.get("details") or {}).get("phase", "evaluation")
        return f"Your previous answer did not finish: the {phase} ran past its time limit.\n{_ONE_BLOCK}"
    heading = "Your previous answer failed to compile" if kind == "compile_error" else "Your previous answer failed before it could run"
    return f"{heading}:\n```\n{bounded(verdict.get('error') or 'no error output', limit)}\n```\nFix the error. {_ONE_BLOCK}"


def _incorrect(verdict: dict[str, Any], limit: int) -> str:
    details = verdict.get("details") or {}
    check = details.get("check")
    trial = details.get("trial")
    where = f" on trial {trial + 1}" if isinstance(trial, int) else ""
    if check == "shape":
        what = f"the output shape is wrong{where}: expected {details.get('expected_shape')}, got {details.get('got_shape')}"
    elif check == "dtype":
        what = f"the output dtype is wrong{where}: expected {details.get('expected_dtype')}, got {details.get('got_dtype')}"
    elif "max_abs_diff" in details:
        what = f"the output differs from the reference{where}: max absolute difference {details['max_abs_diff']:.3g}, max relative difference {details.get('max_rel_diff', float('nan')):.3g}"
    else:
        what = verdict.get("error") or "the output does not match the reference"
    error = verdict.get("error")
    extra = f"\n```\n{bounded(error, limit)}\n```" if error and verdict.get("error_kind") in ("runtime_error", "crashed") else ""
    return f"Your previous answer compiled but is incorrect: {what}.{extra}\nFix the correctness bug. {_ONE_BLOCK}"


def _correct(verdict: dict[str, Any], reward: float) -> str:
    runtime, baseline = verdict.get("runtime"), verdict.get("baseline")
    speedup = verdict.get("speedup")
    if runtime and baseline and speedup is not None:
        timing = (
            f"Your previous answer is correct. It ran in {runtime['median_ms']:.4g} ms against the PyTorch "
            f"baseline's {baseline['median_ms']:.4g} ms: a speedup of {speedup:.2f}x (reward {reward:.2f})."
        )
    else:
        timing = f"Your previous answer is correct (reward {reward:.2f}); its timing on this device is not meaningful."
    return f"{timing}\n{_FASTER} {_ONE_BLOCK}"
