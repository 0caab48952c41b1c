"""Celery task of the build stage: compile the answer's extensions ahead of its evaluation and
store them with the turn, so the evaluate worker (on another host, perhaps) only loads them."""
from __future__ import annotations

from db import builds
from orchestrator.app import app
from orchestrator.pipeline import Outcome, TurnContext, run_stage
from orchestrator.stages import BUILD
from workers.evaluation.prebuild import not_ahead, prebuild


def build_turn(context: TurnContext) -> Outcome:
    # the clean stage sends past this stage an answer with nothing to build ahead; these two cases
    # come only from turns cleaned before it did
    if context.code is None:
        return Outcome()
    settings = context.config.evaluation_settings()
    skipped = not_ahead(context.code, settings)
    if skipped is not None:
        return Outcome(values={"prebuild": {"skipped": skipped}})
    prebuilt = prebuild(context.problem.source, context.code, settings)
    entries = [(e.key, e.meta, e.module) for e in prebuilt.entries]
    return Outcome(values={"prebuild": prebuilt.summary()},
                   also_store=lambda session, turn_id: builds.save(session, turn_id, entries))


@app.task(name=BUILD.task_name)
def build(turn_id: int) -> None:
    run_stage(BUILD, turn_id, build_turn)
