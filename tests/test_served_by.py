"""What served a run, read off stored run configs of every vintage (pure)."""
from __future__ import annotations

from orchestrator.run_config import RunConfig, server_urls
from orchestrator.served_by import ServedBy, served_by, served_line

CHECKED = {"model": "Qwen/Qwen3-8B", "urls": ["http://gpu1:30000", "http://gpu2:30000"],
           "servers": [{"url": "http://gpu1:30000", "model_path": "/models/qwen3-8b", "weight_version": "step-3"},
                       {"url": "http://gpu2:30000", "model_path": "/models/qwen3-8b", "weight_version": "step-3"}]}


def test_a_checked_run_names_its_model_weights_and_servers():
    assert served_by(CHECKED) == ServedBy("Qwen/Qwen3-8B", "/models/qwen3-8b", "step-3", ["http://gpu1:30000", "http://gpu2:30000"])
    assert served_line(served_by(CHECKED).__dict__) == "Qwen/Qwen3-8B (/models/qwen3-8b) · weights step-3 · http://gpu1:30000, http://gpu2:30000"


def test_runs_stored_with_one_url_or_none():
    legacy = {"model": "Qwen/Qwen3-8B", "generator": "sglang", "url": "http://old:30000"}
    assert server_urls(legacy) == ["http://old:30000"] == served_by(legacy).urls
    assert RunConfig.model_validate(legacy).urls == ["http://old:30000"]  # the same reading, validated
    replay = {"model": "Qwen/Qwen3-8B", "generator": "replay", "urls": []}
    assert served_by(replay) == ServedBy(model="Qwen/Qwen3-8B") and served_line(served_by(replay).__dict__) == "Qwen/Qwen3-8B"
