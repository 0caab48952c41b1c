"""Before a run starts: every model server healthy, all serving the same model and weights, and the
model the run names (when it names one). The run stores what they said."""
from __future__ import annotations

from pathlib import PurePosixPath

from orchestrator.run_config import RunConfig
from workers.generation import GenerationError, make_backend


def check_servers(config: RunConfig, requested_model: str | None) -> RunConfig:
    """The config with `servers` filled in and `model` set to the served model unless one was
    requested; ValueError saying what is wrong otherwise."""
    settings = config.generation_settings()
    if settings.tokenizer:
        from workers.generation.tokenizer import load_tokenizer

        load_tokenizer(settings.tokenizer)  # ValueError naming it
    backend = make_backend(config.generator, url=config.urls, settings=settings, retries=1)
    try:
        infos = [backend.server_info(url) for url in backend.urls]
    except GenerationError as error:
        raise ValueError(f"{error} (checked before the run starts: nothing was created)") from None
    finally:
        backend.close()
    served = sorted({(info.model_path or "?", info.weight_version or "?") for info in infos})
    if len(served) > 1:
        listing = "; ".join(f"{info.url}: {info.model_path} (weights {info.weight_version})" for info in infos)
        raise ValueError(f"the servers do not serve the same model and weights: {listing}")
    model_path = infos[0].model_path
    if requested_model and model_path and not same_model(requested_model, model_path):
        raise ValueError(f"the server(s) serve {model_path!r}, not --model {requested_model!r}")
    return config.model_copy(update={
        "model": requested_model or model_path or config.model,
        "servers": [{"url": i.url, "model_path": i.model_path, "weight_version": i.weight_version} for i in infos],
    })


def same_model(name: str, model_path: str) -> bool:
    """A hub name and a local path name the same model when their last components agree
    ("Qwen/Qwen3-8B" and "/models/qwen3-8b")."""
    return PurePosixPath(name.rstrip("/")).name.lower() == PurePosixPath(model_path.rstrip("/")).name.lower()
