"""Celery task of the clean stage: cut degenerate repetition, split reasoning, extract the code, and
send the turn on to the first stage with work to do."""
from __future__ import annotations

from orchestrator.app import app
from orchestrator.feedback import no_code_verdict
from orchestrator.pipeline import Outcome, TurnContext, run_stage
from orchestrator.stages import BUILD, CLEAN, EVALUATE
from workers.cleaning import CleanResult, clean_response
from workers.evaluation.prebuild import not_ahead


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
    """The cleaned answer; with no code it is scored here (nothing to build or evaluate), and with
    nothing to build ahead it goes straight to evaluation."""
    result = clean_response(context.raw_response or "", context.config.cleaning_settings(context.finish_reason))
    columns = cleaning_columns(result)
    if result.code is None:
        return Outcome(values={**columns, **no_code_verdict(result.degenerate, result.no_code_reason)}, reward=0.0, through=EVALUATE)
    skipped = not_ahead(result.code, context.config.evaluation_settings())
    if skipped is not None:
        return Outcome(values={**columns, "prebuild": {"skipped": skipped}}, through=BUILD)
    return Outcome(values=columns)


@app.task(name=CLEAN.task_name)
def clean(turn_id: int) -> None:
    run_stage(CLEAN, turn_id, clean_turn)
