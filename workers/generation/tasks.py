"""Celery task of the generate stage: build the prompt from the database, call the model, store."""
from __future__ import annotations

import logging
from functools import lru_cache

from orchestrator.app import app
from orchestrator.pipeline import Outcome, TurnContext, run_stage
from orchestrator.prompts import build_messages
from orchestrator.stages import GENERATE
from workers.generation import GenerationBackend, GenerationError, GenerationRequest, make_backend

log = logging.getLogger("kturn.generation")


@lru_cache(maxsize=16)
def backend_for(name: str, url: str | None, model: str | None, replay_path: str | None) -> GenerationBackend:
    return make_backend(name, url=url, model=model, replay_path=replay_path)


def generate_turn(context: TurnContext) -> Outcome:
    config = context.config
    messages = build_messages(context.problem.source, config.backend, context.history, config.prompt.max_prompt_chars)
    request = GenerationRequest(
        rid=f"kturn-turn-{context.turn_id}",
        messages=messages,
        sampling=config.sampling_params(),
        enable_thinking=config.enable_thinking,
        problem_key=context.problem.key,
        sample_index=context.sample_index,
        turn_index=context.turn_index,
    )
    stored = {"prompt_messages": messages}
    try:
        result = backend_for(config.generator, config.url, config.model, config.replay_path).generate(request)
    except GenerationError as error:
        log.error("turn %s: generation failed: %s", context.turn_id, error)
        return Outcome(values=stored, failure=f"generation failed: {error}")
    return Outcome(
        values={
            **stored,
            "raw_response": result.text,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "cached_tokens": result.cached_tokens,
            "generation_meta": {"backend": result.backend, "model": config.model, "latency_s": result.latency_s, "rid": request.rid},
        }
    )


@app.task(name=GENERATE.task_name)
def generate(turn_id: int) -> None:
    run_stage(GENERATE, turn_id, generate_turn)
