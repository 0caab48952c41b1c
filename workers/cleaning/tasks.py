"""Celery task of the clean stage: cut degenerate repetition, split reasoning, extract the code."""
from __future__ import annotations

from orchestrator.app import app
from orchestrator.pipeline import Outcome, TurnContext, run_stage
from orchestrator.stages import CLEAN
from workers.cleaning import CleanResult, clean_response


def cleaning_columns(result: CleanResult) -> dict:
    """The `turns` columns a cleaning result fills (shared with `kturn reclean`)."""
    return {
        "cleaned_response": result.cleaned,
        "thinking": result.thinking,
        "code": result.code,
        "degenerate": result.degenerate,
        "severity": result.severity,
        "repeat_period": result.period,
        "repeats": result.repeats,
        "chars_removed": result.chars_removed,
        "no_code_reason": result.no_code_reason,
        "cleaning_warnings": result.warnings,
    }


def clean_turn(context: TurnContext) -> Outcome:
    result = clean_response(context.raw_response or "", context.config.cleaning_settings(context.finish_reason))
    return Outcome(values=cleaning_columns(result))


@app.task(name=CLEAN.task_name)
def clean(turn_id: int) -> None:
    run_stage(CLEAN, turn_id, clean_turn)
