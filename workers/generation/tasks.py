"""Celery task of the generate stage: build the prompt from the database, call the model, store.

A generate worker keeps many requests in flight: run it with Celery's threads pool,
`celery -A orchestrator.app worker -Q generate -P threads -c 128`. Every task thread of the
process shares one connection pool (ServerPool) with a cap per server, and one watcher that
aborts the requests of cancelled turns.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from db import generation as generation_queries
from orchestrator.app import app
from orchestrator.in_flight import in_flight_turns
from orchestrator.pipeline import Outcome, TurnContext, run_stage
from orchestrator.prompts import build_messages
from orchestrator.run_config import RunConfig
from orchestrator.settings import get_settings
from orchestrator.stages import GENERATE
from workers.generation import GenerationBackend, GenerationError, GenerationRequest, GenerationResult, ServerPool, make_backend

log = logging.getLogger("kturn.generation")


@lru_cache(maxsize=1)
def server_pool() -> ServerPool:
    """The process's one connection pool to the model servers (made after the fork, on first use)."""
    return ServerPool(max_in_flight_per_server=get_settings().server_max_in_flight)


@lru_cache(maxsize=16)
def _backend(generator: str, urls: tuple[str, ...], model: str, replay_path: str | None, settings) -> GenerationBackend:
    if generator == "replay":
        return make_backend(generator, replay_path=replay_path)
    return make_backend(generator, url=list(urls), model=model, settings=settings, pool=server_pool())


def backend_for(config: RunConfig) -> GenerationBackend:
    return _backend(config.generator, tuple(config.urls), config.model, config.replay_path, config.generation_settings())


def generate_turn(context: TurnContext) -> Outcome:
    config = context.config
    first = context.problem.prompt if config.first_prompt == "dataset" else None
    messages = build_messages(context.problem.source, config.backend, context.history, config.prompt.max_prompt_chars, first)
    request = GenerationRequest(
        rid=f"kturn-turn-{context.turn_id}",
        messages=messages,
        sampling=config.sampling_params(),
        enable_thinking=config.enable_thinking,
        problem_key=context.problem.key,
        sample_index=context.sample_index,
        turn_index=context.turn_index,
        affinity_key=f"trajectory-{context.trajectory_id}",
    )
    stored = {"prompt_messages": messages}
    settings = get_settings()
    try:
        with in_flight_turns(settings.sqlalchemy_url, settings.cancel_poll_seconds).watching(context.turn_id) as abort:
            result = backend_for(config).generate(request, abort)
    except GenerationError as error:
        log.error("turn %s: generation failed: %s", context.turn_id, error)
        return Outcome(values=stored, failure=f"generation failed: {error}")
    if result.loop is not None:
        log.info("turn %s: loop at offset %d (period %d) aborted %s tokens after its onset",
                 context.turn_id, result.loop.onset_char, result.loop.period, result.loop.tokens_after_onset)
    record_tokens = config.generation_settings().record_tokens
    return Outcome(values={**stored, **generation_columns(result, config, request.rid)},
                   also_store=_token_writer(result) if record_tokens else None)


def generation_columns(result: GenerationResult, config: RunConfig, rid: str) -> dict[str, Any]:
    loop = result.loop
    return {
        "raw_response": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cached_tokens": result.cached_tokens,
        "loop_onset": loop.onset_char if loop else None,
        "chars_after_onset": loop.chars_after_onset if loop else None,
        "tokens_after_onset": loop.tokens_after_onset if loop else None,
        "generation_meta": {"backend": result.backend, "model": config.model, "latency_s": result.latency_s, "rid": rid,
                            "server": result.server_url, "weight_version": result.weight_version},
    }


def _token_writer(result: GenerationResult):
    def write(session, turn_id: int) -> None:
        generation_queries.store_tokens(session, turn_id, result.prompt_token_ids, result.output_ids,
                                        result.output_logprobs, result.weight_version)
    return write


@app.task(name=GENERATE.task_name)
def generate(turn_id: int) -> None:
    run_stage(GENERATE, turn_id, generate_turn)
